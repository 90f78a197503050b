"""Idempotency-Key: one task id per (API key, Idempotency-Key), so a retried request gets the
first attempt's id and answer instead of a second computation.

A claim is written in two steps. The first attempt claims the key as *pending* for
INFERENCE_IDEMPOTENCY_PENDING_S; once its batch is published it marks the claim *sent*, kept as
long as results are (CELERY_RESULT_EXPIRES). A repeat that finds the claim sent waits for (or
returns) that task's answer. One that finds it pending waits until it is sent or answered (a
host cut after publishing, before its mark got through), or until it expires and the repeat
claims the key itself: an API host lost between claiming and publishing (a host cut off behind
HAProxy, in bench/scale) then costs its client's retry seconds, not the whole deadline spent
waiting for a task nobody published.

A first attempt published but neither marked nor answered within the pending time (a queue more
than that long) lets a retry compute the request a second time under a new id; each client then
gets an answer, and the claim names the retry's task.
"""

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from redis.asyncio import Redis
from redis.exceptions import RedisError

from apps.predictions.errors import ApiError
from inference_common.results import result_key

PREFIX = "inference:idem:"
PENDING = "pending"
SENT = "sent"
POLL_S = 0.05

# Marks a claim sent only while it is still this attempt's (a slow publish may have lost it).
_MARK_SENT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""

# Deletes a claim only while it still names this task (ARGV[1] "<task id> "), pending or sent:
# an attempt whose pending claim expired and was taken by a retry must not free the retry's.
_DELETE_OWN = """
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, string.len(ARGV[1])) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Claim:
    """This attempt's hold on a key: `task_id` is its own (`fresh`) or the first attempt's."""

    record: str
    task_id: str
    fingerprint: str
    fresh: bool


def record_key(owner: str, idempotency_key: str) -> str:
    """Where the claim of this API key's Idempotency-Key lives."""
    return PREFIX + hashlib.sha256(f"{owner}\0{idempotency_key}".encode()).hexdigest()


async def claim(redis: Redis, record: str, *, task_id: str, fingerprint: str, timeout_s: float) -> Claim:
    """`task_id`, now claimed as pending, or the id of a sent claim for the same request.

    Waits while another attempt's claim is pending, up to `timeout_s` (then TimeoutError). A claim
    for a different request is refused with 422."""
    deadline = time.monotonic() + timeout_s
    pending_ms = max(1, int(settings.INFERENCE_IDEMPOTENCY_PENDING_S * 1000))
    while True:
        if await redis.set(record, f"{task_id} {fingerprint} {PENDING}", nx=True, px=pending_ms):
            return Claim(record, task_id, fingerprint, fresh=True)
        existing = await redis.get(record)
        if existing is not None:
            # Replies are bytes: the client sets no decode_responses.
            # A claim written before the pending step (two fields) was sent.
            claimed_id, claimed_fingerprint, *state = cast("bytes", existing).decode().split(" ")
            if claimed_fingerprint != fingerprint:
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                    field="Idempotency-Key",
                )
            # Answered already: published, its mark lost (the host cut between the two).
            if state != [PENDING] or await redis.exists(result_key(claimed_id)):
                return Claim(record, claimed_id, fingerprint, fresh=False)
            if time.monotonic() >= deadline:
                raise TimeoutError
            await asyncio.sleep(POLL_S)


async def mark_sent(redis: Redis, claim: Claim) -> bool:
    """The claimed task's batch is published: keep the claim as long as its result. False when the
    pending claim was lost meanwhile (expired, and maybe taken by a retry)."""
    marked = await redis.eval(
        _MARK_SENT,
        1,
        claim.record,
        f"{claim.task_id} {claim.fingerprint} {PENDING}",
        f"{claim.task_id} {claim.fingerprint} {SENT}",
        str(settings.CELERY_RESULT_EXPIRES),
    )
    return marked is not None


async def abandon(redis: Redis, claim: Claim) -> None:
    """The publish failed or was refused (503): a retry may claim the key at once instead of
    waiting out the pending time. Best effort: with Redis down the claim expires by itself. A
    refused publish may still run (apps/predictions/replication.py); a retry then computes the
    request again under its own id."""
    with contextlib.suppress(RedisError, OSError):
        await release(redis, claim)


async def release(redis: Redis, claim: Claim) -> None:
    """After a timeout nothing was computed (the task expired): let a retry compute again. Only
    while the claim still names this attempt's task."""
    await redis.eval(_DELETE_OWN, 1, claim.record, f"{claim.task_id} ")


def release_queue(pipe: Any, claim: Claim) -> None:
    """`release`, queued on a pipeline (the cancellations of many requests at once)."""
    pipe.eval(_DELETE_OWN, 1, claim.record, f"{claim.task_id} ")
