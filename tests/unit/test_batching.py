"""The producer-side batcher, with a recording stand-in for the broker."""

import asyncio

import numpy as np
import pytest

from apps.predictions.batching import Batcher
from apps.predictions.selectors import ServedModel

SIGNATURE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}], "outputs": []}


def served(max_batch_size: int = 4, max_delay_ms: float = 20.0) -> ServedModel:
    return ServedModel(
        name="toy", version=1, signature=SIGNATURE, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms
    )


class Broker:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[list[str], float | None]] = []
        self.fail = fail

    async def publish(self, model: ServedModel, parts: list[dict], expires: float | None) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.batches.append(([p["id"] for p in parts], expires))


def rows(n: int) -> dict[str, np.ndarray]:
    return {"x": np.zeros((n, 2), dtype=np.float32)}


async def submit_all(batcher: Batcher, sizes: list[int], expires: list[float | None] | None = None) -> None:
    expires = expires or [5.0] * len(sizes)
    await asyncio.gather(
        *(
            batcher.submit(request_id=f"r{i}", inputs=rows(n), expires_s=e)
            for i, (n, e) in enumerate(zip(sizes, expires, strict=True))
        )
    )


def test_requests_within_the_window_leave_together() -> None:
    broker = Broker()
    asyncio.run(submit_all(Batcher(served(max_batch_size=64), broker.publish), [1, 1, 1]))
    assert [ids for ids, _ in broker.batches] == [["r0", "r1", "r2"]]


def test_a_full_batch_leaves_at_once_and_the_rest_starts_a_new_one() -> None:
    broker = Broker()

    async def run() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await submit_all(Batcher(served(max_batch_size=4, max_delay_ms=1000), broker.publish), [2, 2, 3, 1])
        return loop.time() - started

    elapsed = asyncio.run(run())
    assert [ids for ids, _ in broker.batches] == [["r0", "r1"], ["r2", "r3"]]
    assert elapsed < 0.5  # both batches filled up; nobody waited for the 1 s window


def test_a_lone_request_waits_at_most_the_delay() -> None:
    broker = Broker()

    async def run() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await Batcher(served(max_delay_ms=30), broker.publish).submit(
            request_id="solo", inputs=rows(1), expires_s=5
        )
        return loop.time() - started

    elapsed = asyncio.run(run())
    assert broker.batches == [(["solo"], pytest.approx(5, abs=0.2))]
    assert 0.025 <= elapsed < 0.2


def test_zero_delay_disables_batching() -> None:
    broker = Broker()
    asyncio.run(submit_all(Batcher(served(max_delay_ms=0), broker.publish), [1, 1]))
    assert [ids for ids, _ in broker.batches] == [["r0"], ["r1"]]


def test_expiry_is_the_latest_deadline_and_none_with_an_async_request() -> None:
    broker = Broker()
    asyncio.run(submit_all(Batcher(served(max_batch_size=64), broker.publish), [1, 1], expires=[1.0, 9.0]))
    assert broker.batches[0][1] == pytest.approx(9.0, abs=0.2)
    broker = Broker()
    asyncio.run(submit_all(Batcher(served(max_batch_size=64), broker.publish), [1, 1], expires=[1.0, None]))
    assert broker.batches[0][1] is None


def test_a_broker_failure_reaches_every_request_of_the_batch() -> None:
    broker = Broker(fail=True)

    async def run() -> list[BaseException | None]:
        batcher = Batcher(served(max_batch_size=64), broker.publish)
        return await asyncio.gather(
            *(batcher.submit(request_id=f"r{i}", inputs=rows(1), expires_s=5) for i in range(3)),
            return_exceptions=True,
        )

    assert all(isinstance(r, ConnectionError) for r in asyncio.run(run()))
