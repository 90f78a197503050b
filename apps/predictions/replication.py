"""Accepted means replicated: after each batch is published, WAIT until
INFERENCE_PUBLISH_REPLICAS replicas hold it, and with it everything written before it (an async
job's record, offloaded tensors).

Redis replicates asynchronously. A message the primary acknowledged but had not yet streamed to
its replica is gone once Sentinel promotes that replica: its client then waits for nothing (a
sync request timed out with 504 across a failover in tests/integration/test_sentinel.py). WAIT
counts the writes of its own connection, and kombu published on another; replication is one
ordered stream, so a write on this connection after the publish, with WAIT behind it in the same
pipeline, covers the publish too.

When the replicas fall short (none connected: from a failover until the old primary is back as a
replica, or a replica lost), a batch holding an async job is refused with 503: its client would
be told 202 and could lose the job. A sync-only batch goes ahead: its client is still waiting, and
only a second failure before a replica is back could lose it. For SHORTFALL_HOLD_S after a
shortfall no WAIT is sent, so sync requests do not each pay the WAIT's timeout and async ones are
refused at once; the next WAIT after that tells whether the replicas are back. A refused async job
may still run from the primary alone: a retry with the same Idempotency-Key gets its id.
"""

import logging
import time

from django.conf import settings
from redis.asyncio import Redis

from apps.predictions.errors import unavailable

logger = logging.getLogger(__name__)

SHORTFALL_HOLD_S = 1.0
MARK_PREFIX = "inference:replicated:"
MARK_TTL_S = 60


class Replication:
    """The WAIT after each publish of one API process, and what it last learnt of the replicas."""

    def __init__(self) -> None:
        self.short_until = 0.0  # monotonic time until which the replicas count as missing

    async def confirm(self, redis: Redis, *, mark: str, holds_async_job: bool) -> None:
        """Return once the replicas hold what this process published so far; raise 503 when
        they do not and the batch holds an async job. `mark`: this process's own key, written
        to give WAIT a write on this connection."""
        replicas = settings.INFERENCE_PUBLISH_REPLICAS
        if replicas <= 0:
            return
        now = time.monotonic()
        if now < self.short_until:
            acknowledged = 0
        else:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.set(MARK_PREFIX + mark, b"1", ex=MARK_TTL_S)
                pipe.wait(replicas, settings.INFERENCE_PUBLISH_REPLICA_TIMEOUT_MS)
                _, acknowledged = await pipe.execute()
            if acknowledged >= replicas:
                return
            if self.short_until <= now:
                logger.warning(
                    "%d of %d replicas acknowledged a publish: async jobs refused, sync requests "
                    "unprotected against a failover until they are back",
                    acknowledged,
                    replicas,
                )
            self.short_until = now + SHORTFALL_HOLD_S
        if holds_async_job:
            raise unavailable(f"the job reached {acknowledged} of {replicas} replicas in time; retry shortly")
