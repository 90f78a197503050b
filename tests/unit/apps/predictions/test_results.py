"""The API's result waiter against a real redis-server: answers come by pub/sub, and an answer
whose message was lost (published while the subscription was down) is found in the stored
results as soon as the subscription is back, not at the next poll."""

import asyncio
import time

import redis

from apps.predictions import results
from apps.predictions.results import ResultWaiter
from inference_common.results import RESULT_PREFIX


def test_a_published_answer_reaches_its_waiter(redis_server: str) -> None:
    async def main() -> bytes:
        waiter = ResultWaiter(redis_server)
        task_id = waiter.new_task_id()
        future = waiter.expect(task_id)
        await asyncio.sleep(0.3)  # the reader is subscribed
        await waiter.redis.publish(RESULT_PREFIX + task_id, b"answer")
        payload = await waiter.wait(task_id, future, within=5)
        await waiter.redis.aclose()
        return payload

    assert asyncio.run(main()) == b"answer"


def test_an_answer_stored_before_the_subscription_came_up_is_found(redis_server: str) -> None:
    admin = redis.Redis.from_url(redis_server)

    async def main() -> tuple[bytes, float]:
        waiter = ResultWaiter(redis_server)
        task_id = waiter.new_task_id()
        # Stored and published before the reader subscribed: the message is gone.
        admin.set(RESULT_PREFIX + task_id, b"early")
        assert admin.publish(RESULT_PREFIX + task_id, b"early") == 0
        future = waiter.expect(task_id)  # starts the reader
        started = time.monotonic()
        payload = await waiter.wait(task_id, future, within=results.POLL_INTERVAL_S * 2)
        await waiter.redis.aclose()
        return payload, time.monotonic() - started

    payload, waited = asyncio.run(main())
    assert payload == b"early"
    assert waited < 2.0 < results.POLL_INTERVAL_S  # from the check on subscribing, not a poll


def test_an_answer_lost_while_the_subscription_was_down_is_found_on_resubscribing(
    redis_server: str,
) -> None:
    admin = redis.Redis.from_url(redis_server)

    async def main() -> tuple[list[bytes], float]:
        waiter = ResultWaiter(redis_server)
        ids = [waiter.new_task_id() for _ in range(3)]
        futures = [waiter.expect(task_id) for task_id in ids]
        await asyncio.sleep(0.3)  # subscribed
        admin.client_kill_filter(_type="pubsub")  # Redis drops the subscriber
        for task_id in ids:  # answered meanwhile: stored, published to nobody
            admin.set(RESULT_PREFIX + task_id, task_id.encode())
            admin.publish(RESULT_PREFIX + task_id, task_id.encode())
        started = time.monotonic()
        within = results.POLL_INTERVAL_S * 2
        payloads = await asyncio.gather(
            *[waiter.wait(t, f, within=within) for t, f in zip(ids, futures, strict=True)]
        )
        await waiter.redis.aclose()
        return [*payloads, *[t.encode() for t in ids]], time.monotonic() - started

    out, waited = asyncio.run(main())
    assert out[:3] == out[3:]
    assert waited < 3.0 < results.POLL_INTERVAL_S
