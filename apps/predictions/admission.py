"""Admission control: refuse work at once, before enqueueing, when a client or a queue is over
its limit: the key's counter for this second and the queue's length, both in Redis.

The checks that arrive in one turn of the event loop share one Redis round trip: a key with n
requests in it is counted with one INCRBY n, each queue is measured once, and every request gets
the count it would have got alone (the counter's value before the batch plus its place in it).
At 64 clients the requests answered by one batch come back together, so one pipeline replaces
dozens (the per-request round trip was 9 % of the API's CPU samples).
"""

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from django.conf import settings

from apps.predictions.errors import RETRY_AFTER_S, ApiError, unavailable
from apps.predictions.results import result_waiter_get
from inference_common.priority import LEVELS, queue_lists


@dataclass
class _Check:
    owner: str | None  # None: only the queue's depth (nothing counted against a key)
    queue: str
    answer: asyncio.Future[tuple[int, int]] = field(repr=False)  # (key's count, queue depth)


class AdmissionGate:
    """The admission checks of one event loop, sent together."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._pending: list[_Check] = []
        self._flusher: asyncio.Task[None] | None = None  # the one sending checks now

    async def check(self, *, owner: str, rate: int, queue: str) -> None:
        """429 past `rate` requests per second for `owner` (0: unlimited); 503 when `queue` is full."""
        count, depth = await self.counts(owner=owner, queue=queue)
        if rate and count > rate:
            raise ApiError(
                429,
                "throttled",
                f"more than {rate} requests per second for this API key",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        if depth >= settings.INFERENCE_MAX_QUEUE_DEPTH:
            raise unavailable(f"{depth} requests already wait in {queue}; retry shortly", code="overloaded")

    async def counts(self, *, owner: str | None, queue: str) -> tuple[int, int]:
        """This request's count for its key in the current second (0 for owner None, which
        counts nothing), and the queue's depth."""
        loop = asyncio.get_running_loop()
        check = _Check(owner, queue, loop.create_future())
        self._pending.append(check)
        # One pipeline at a time per loop: it starts after the requests already scheduled this
        # turn, and what arrives while it waits for Redis goes in the next. (One task per turn
        # overlapped under load: 256 gRPC clients took the client's 100 connections.)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_all())
        return await check.answer

    async def _flush_all(self) -> None:
        while self._pending:
            await self._flush()

    async def _flush(self) -> None:
        checks, self._pending = self._pending, []
        per_owner = Counter(check.owner for check in checks if check.owner is not None)
        queues = list(dict.fromkeys(check.queue for check in checks))
        second = int(time.time())
        pipe = self.client.pipeline(transaction=False)
        for owner, n in per_owner.items():
            window = f"inference:throttle:{owner}:{second}"
            pipe.incrby(window, n)
            pipe.expire(window, 2)
        for queue in queues:
            for name in queue_lists(queue):  # its priority levels' lists
                pipe.llen(name)
        try:
            replies = await pipe.execute()
        except Exception as exc:  # each waiting request reports it (503: broker unavailable)
            for check in checks:
                if not check.answer.done():
                    check.answer.set_exception(exc)
            return
        totals = dict(zip(per_owner, replies[0 : 2 * len(per_owner) : 2], strict=True))
        lengths = replies[2 * len(per_owner) :]
        levels = len(LEVELS)
        depths = {queue: sum(lengths[i * levels : (i + 1) * levels]) for i, queue in enumerate(queues)}
        place = {owner: totals[owner] - n for owner, n in per_owner.items()}
        for check in checks:
            count = 0
            if check.owner is not None:
                place[check.owner] += 1
                count = place[check.owner]
            if not check.answer.done():
                check.answer.set_result((count, depths[check.queue]))


_gates: dict[int, AdmissionGate] = {}


def admission_gate_get() -> AdmissionGate:
    """The gate of the running event loop (one per loop, as the result waiter)."""
    loop_id = id(asyncio.get_running_loop())
    gate = _gates.get(loop_id)
    if gate is None:
        gate = _gates[loop_id] = AdmissionGate(result_waiter_get().redis)
    return gate


async def admission_check(*, owner: str, rate: int, queue: str) -> None:
    """The running event loop's gate decides (AdmissionGate.check)."""
    await admission_gate_get().check(owner=owner, rate=rate, queue=queue)
