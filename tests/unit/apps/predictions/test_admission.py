"""Admission checks of one event-loop turn share one Redis round trip, with the counts each
request would have got alone (against a real redis-server)."""

import asyncio
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from pytest_django.fixtures import Settings
from redis.exceptions import ConnectionError as RedisConnectionError

from apps.predictions.admission import AdmissionGate
from apps.predictions.errors import ApiError


def owner() -> str:
    return f"key-{uuid.uuid4().hex[:8]}"


def test_requests_of_one_turn_get_consecutive_counts_per_key(redis_server: str) -> None:
    queue = f"inference.{uuid.uuid4().hex[:8]}"
    redis.Redis.from_url(redis_server).rpush(queue, b"a", b"b", b"c")
    a, b = owner(), owner()

    async def main() -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
        client = aioredis.Redis.from_url(redis_server)
        gate = AdmissionGate(client)
        calls: list[str] = []
        original = client.pipeline

        def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
            calls.append("pipeline")
            return original(*args, **kwargs)

        client.pipeline = counting_pipeline  # type: ignore[method-assign]  # counts the round trips
        first = await asyncio.gather(*[gate.counts(owner=who, queue=queue) for who in (a, b, a, a, b, a, a)])
        second = await asyncio.gather(*[gate.counts(owner=a, queue=queue) for _ in range(2)])
        await client.aclose()
        return first, second, len(calls)

    first, second, round_trips = asyncio.run(main())
    counts_a = [count for (count, _), who in zip(first, (a, b, a, a, b, a, a), strict=True) if who == a]
    counts_b = [count for (count, _), who in zip(first, (a, b, a, a, b, a, a), strict=True) if who == b]
    assert counts_a == [1, 2, 3, 4, 5] and counts_b == [1, 2]
    assert all(depth == 3 for _, depth in first)
    assert round_trips == 2  # one per turn, not one per request
    # The next turn goes on counting in the same second (or starts over in the next one).
    assert [count for count, _ in second] in ([6, 7], [1, 2])


def test_checks_arriving_while_a_pipeline_waits_share_the_next_one(redis_server: str) -> None:
    """Under load, checks come on every turn while a pipeline waits for Redis: one pipeline at a
    time per loop, so a burst never takes one connection per turn (256 gRPC clients once took the
    client's 100 and were answered 503)."""
    queue = f"inference.{uuid.uuid4().hex[:8]}"
    who = owner()

    async def main() -> tuple[list[tuple[int, int]], int, int]:
        client = aioredis.Redis.from_url(redis_server)
        gate = AdmissionGate(client)
        in_flight, most, sent = 0, 0, 0
        original = client.pipeline

        class Slow:
            """A pipeline whose round trip takes 20 ms (a busy Redis)."""

            def __init__(self) -> None:
                self.pipe = original(transaction=False)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.pipe, name)

            async def execute(self) -> list[Any]:
                nonlocal in_flight, most, sent
                in_flight, sent = in_flight + 1, sent + 1
                most = max(most, in_flight)
                await asyncio.sleep(0.02)
                try:
                    return await self.pipe.execute()
                finally:
                    in_flight -= 1

        client.pipeline = lambda *args, **kwargs: Slow()  # type: ignore[method-assign,assignment]

        async def arriving(turn: int) -> tuple[int, int]:
            await asyncio.sleep(turn * 0.002)  # one check every 2 ms: ten per round trip
            return await gate.counts(owner=who, queue=queue)

        counts = await asyncio.gather(*[arriving(turn) for turn in range(100)])
        await client.aclose()
        return counts, most, sent

    counts, most, sent = asyncio.run(main())
    assert most == 1  # never two pipelines at once
    assert sent <= 20  # about one per round trip, not one per arrival
    assert len(counts) == 100 and all(count >= 1 and depth == 0 for count, depth in counts)


def test_a_depth_only_check_counts_nothing_against_any_key(redis_server: str) -> None:
    """A shadow's copy asks only the queue's depth (owner None): no throttle key is written, and
    the keys checked in the same turn count as if it were not there."""
    queue = f"inference.{uuid.uuid4().hex[:8]}"
    sync = redis.Redis.from_url(redis_server)
    sync.rpush(queue, b"a", b"b")
    a = owner()

    async def main() -> list[tuple[int, int]]:
        client = aioredis.Redis.from_url(redis_server)
        gate = AdmissionGate(client)
        found = list[tuple[int, int]]()
        found += await asyncio.gather(
            gate.counts(owner=None, queue=queue),
            gate.counts(owner=a, queue=queue),
            gate.counts(owner=None, queue=queue),
        )
        await client.aclose()
        return found

    assert asyncio.run(main()) == [(0, 2), (1, 2), (0, 2)]
    throttled = list(sync.scan_iter("inference:throttle:*"))
    assert any(a.encode() in key for key in throttled)  # the key's own count was written
    assert not any(b"None" in key or b"shadow" in key for key in throttled)


def test_redis_down_fails_every_waiting_request() -> None:
    async def main() -> list[BaseException | tuple[int, int]]:
        client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
        gate = AdmissionGate(client)
        return await asyncio.gather(
            *[gate.counts(owner="k", queue="q") for _ in range(3)], return_exceptions=True
        )

    results = asyncio.run(main())
    assert len(results) == 3 and all(isinstance(r, (RedisConnectionError, OSError)) for r in results)


@pytest.mark.parametrize("rate,refused", [(3, 2), (0, 0)])
def test_rate_limit_refuses_past_the_rate(redis_server: str, rate: int, refused: int) -> None:
    who, queue = owner(), f"inference.{uuid.uuid4().hex[:8]}"

    async def main() -> list[BaseException | None]:
        gate = AdmissionGate(aioredis.Redis.from_url(redis_server))
        return await asyncio.gather(
            *[gate.check(owner=who, rate=rate, queue=queue) for _ in range(5)], return_exceptions=True
        )

    results = asyncio.run(main())
    errors = [r for r in results if isinstance(r, ApiError)]
    assert len(errors) == refused and all(r is None or isinstance(r, ApiError) for r in results)
    assert all(e.status == 429 and e.headers == {"Retry-After": "1"} for e in errors)


def test_a_full_queue_is_refused_with_503(redis_server: str, settings: Settings) -> None:
    queue = f"inference.{uuid.uuid4().hex[:8]}"
    redis.Redis.from_url(redis_server).rpush(queue, b"a", b"b")
    settings.INFERENCE_MAX_QUEUE_DEPTH = 2

    async def main() -> None:
        await AdmissionGate(aioredis.Redis.from_url(redis_server)).check(owner=owner(), rate=0, queue=queue)

    with pytest.raises(ApiError) as refused:
        asyncio.run(main())
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
