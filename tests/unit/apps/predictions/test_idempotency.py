"""Idempotency-Key claims against a real redis-server: a pending claim holds repeats until it is
sent (then they share its id) or expires (then a repeat claims the key itself, as when the first
attempt's API host was lost before publishing)."""

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from pytest_django import Settings

from apps.predictions import idempotency
from apps.predictions.errors import ApiError
from inference_common.results import result_key


@pytest.fixture
def record(settings: Settings, redis_server: str) -> str:
    settings.INFERENCE_IDEMPOTENCY_PENDING_S = 0.4
    settings.CELERY_RESULT_EXPIRES = 60
    return idempotency.record_key("owner-1", "order-17")


def run(scenario: Any, url: str) -> Any:
    async def main() -> Any:
        client = aioredis.Redis.from_url(url)
        try:
            await client.flushdb()
            return await scenario(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_a_repeat_waits_for_the_pending_claim_and_shares_its_id_once_sent(
    record: str, redis_server: str
) -> None:
    async def scenario(client: aioredis.Redis) -> tuple[Any, ...]:
        first = await idempotency.claim(client, record, task_id="t1", fingerprint="f", timeout_s=5)
        repeat = asyncio.create_task(
            idempotency.claim(client, record, task_id="t2", fingerprint="f", timeout_s=5)
        )
        await asyncio.sleep(0.15)
        waiting = not repeat.done()
        sent = await idempotency.mark_sent(client, first)
        second = await repeat
        ttl = await client.ttl(record)
        return first, waiting, sent, second, ttl

    first, waiting, sent, second, ttl = run(scenario, redis_server)
    assert (first.task_id, first.fresh) == ("t1", True)
    assert waiting, "the repeat went ahead while the first attempt was not yet published"
    assert sent
    assert (second.task_id, second.fresh) == ("t1", False)
    assert ttl > 30  # kept as long as results, no longer the pending time


def test_a_claim_never_sent_expires_and_the_repeat_computes_itself(record: str, redis_server: str) -> None:
    async def scenario(client: aioredis.Redis) -> tuple[Any, ...]:
        first = await idempotency.claim(client, record, task_id="t1", fingerprint="f", timeout_s=5)
        started = time.monotonic()
        second = await idempotency.claim(client, record, task_id="t2", fingerprint="f", timeout_s=5)
        waited = time.monotonic() - started
        late = await idempotency.mark_sent(client, first)  # the first attempt's publish, too late
        await idempotency.mark_sent(client, second)
        third = await idempotency.claim(client, record, task_id="t3", fingerprint="f", timeout_s=5)
        return second, waited, late, third

    second, waited, late, third = run(scenario, redis_server)
    assert (second.task_id, second.fresh) == ("t2", True)
    assert 0.2 < waited < 2.0
    assert not late, "a lost claim was marked sent over the retry's"
    assert (third.task_id, third.fresh) == ("t2", False)  # the claim names the retry's task


def test_a_pending_claim_already_answered_is_the_repeats_answer(record: str, redis_server: str) -> None:
    """The first attempt's host was cut after publishing, before its claim was marked sent: the
    worker's stored answer tells the repeat that the task ran."""

    async def scenario(client: aioredis.Redis) -> Any:
        await idempotency.claim(client, record, task_id="t1", fingerprint="f", timeout_s=5)
        await client.set(result_key("t1"), b"stored answer")
        return await idempotency.claim(client, record, task_id="t2", fingerprint="f", timeout_s=0.2)

    repeat = run(scenario, redis_server)
    assert (repeat.task_id, repeat.fresh) == ("t1", False)


def test_an_abandoned_claim_frees_the_key_at_once_and_only_its_own(record: str, redis_server: str) -> None:
    async def scenario(client: aioredis.Redis) -> tuple[Any, ...]:
        first = await idempotency.claim(client, record, task_id="t1", fingerprint="f", timeout_s=5)
        await idempotency.abandon(client, first)  # its publish failed
        started = time.monotonic()
        second = await idempotency.claim(client, record, task_id="t2", fingerprint="f", timeout_s=5)
        waited = time.monotonic() - started
        await idempotency.abandon(client, first)  # late: the key is the retry's now
        await idempotency.release(client, first)  # its deadline passed: still not its key to free
        kept = await client.get(record)
        await idempotency.release(client, second)  # its own: freed
        return second, waited, kept, await client.exists(record)

    second, waited, kept, left = run(scenario, redis_server)
    assert (second.task_id, second.fresh) == ("t2", True) and waited < 0.2
    assert kept == b"t2 f pending"
    assert not left


def test_a_different_request_under_the_key_is_refused_and_a_long_pending_claim_times_out(
    record: str, redis_server: str
) -> None:
    async def scenario(client: aioredis.Redis) -> tuple[Any, ...]:
        await idempotency.claim(client, record, task_id="t1", fingerprint="f", timeout_s=5)
        with pytest.raises(ApiError) as refused:
            await idempotency.claim(client, record, task_id="t2", fingerprint="other", timeout_s=5)
        with pytest.raises(TimeoutError):
            await idempotency.claim(client, record, task_id="t3", fingerprint="f", timeout_s=0.1)
        await client.set(record, "t0 f")  # a claim written before the pending step counts as sent
        old = await idempotency.claim(client, record, task_id="t4", fingerprint="f", timeout_s=0.1)
        return refused.value, old

    refused, old = run(scenario, redis_server)
    assert (refused.status, refused.field) == (422, "Idempotency-Key")
    assert (old.task_id, old.fresh) == ("t0", False)
