"""The producer-side batcher, with a recording stand-in for the broker."""

import asyncio
import contextlib
from typing import Any

import numpy as np
import pytest

from apps.predictions.batching import Batcher, RequestWithdrawn
from apps.predictions.selectors import ServedModel

SIGNATURE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}], "outputs": []}


def served(max_batch_size: int = 64, max_delay_ms: float = 20.0) -> ServedModel:
    return ServedModel(
        name="toy", version=1, signature=SIGNATURE, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms
    )


class Broker:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[list[str], float | None]] = []
        self.fail = fail

    async def publish(self, model: ServedModel, parts: list[dict[str, Any]], expires: float | None) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.batches.append(([p["id"] for p in parts], expires))

    def ids(self) -> list[list[str]]:
        return [ids for ids, _ in self.batches]


def rows(n: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.zeros((n, 2), dtype=np.float32)}


def test_an_idle_model_sends_a_lone_request_at_once() -> None:
    broker = Broker()

    async def run() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await Batcher(served(max_delay_ms=500), broker.publish).submit(
            request_id="solo", inputs=rows(), expires_s=5
        )
        return loop.time() - started

    assert asyncio.run(run()) < 0.05
    assert broker.ids() == [["solo"]]
    assert broker.batches[0][1] == pytest.approx(5, abs=0.2)


def test_a_batcher_that_is_not_eager_waits_its_delay_even_when_idle() -> None:
    """Shadow copies: nobody waits for them, so even the first waits for others to share its
    batch (or for a full batch)."""
    broker = Broker()

    async def run() -> float:
        loop = asyncio.get_running_loop()
        batcher = Batcher(served(max_batch_size=3, max_delay_ms=100), broker.publish, eager=False)
        started = loop.time()
        first = [
            batcher.submit(request_id=f"copy-{n}", inputs=rows(), expires_s=5, awaited=False)
            for n in range(2)
        ]
        await asyncio.gather(*first)
        waited = loop.time() - started
        full = [
            batcher.submit(request_id=f"full-{n}", inputs=rows(), expires_s=5, awaited=False)
            for n in range(3)
        ]
        await asyncio.wait_for(asyncio.gather(*full), 0.05)  # a full batch leaves at once
        return waited

    assert asyncio.run(run()) >= 0.09
    assert broker.ids() == [["copy-0", "copy-1"], ["full-0", "full-1", "full-2"]]


def test_while_a_batch_is_in_flight_the_next_requests_wait_for_the_window_together() -> None:
    broker = Broker()

    async def run() -> None:
        batcher = Batcher(served(max_delay_ms=20), broker.publish)
        await batcher.submit(request_id="first", inputs=rows(), expires_s=5)  # now in flight
        await asyncio.gather(
            *(batcher.submit(request_id=f"r{i}", inputs=rows(), expires_s=5) for i in range(3))
        )

    asyncio.run(run())
    assert broker.ids() == [["first"], ["r0", "r1", "r2"]]


def test_with_every_slot_taken_the_open_batch_fills_until_an_answer_frees_one() -> None:
    broker = Broker()

    async def run() -> None:
        batcher = Batcher(served(max_delay_ms=5), broker.publish, max_inflight=1)
        await batcher.submit(request_id="first", inputs=rows(), expires_s=5)
        pending = [
            asyncio.create_task(batcher.submit(request_id=f"r{i}", inputs=rows(), expires_s=5))
            for i in range(3)
        ]
        await asyncio.sleep(0.05)  # ten times the delay: still waiting for the slot
        assert broker.ids() == [["first"]]
        batcher.answered("first")
        await asyncio.gather(*pending)

    asyncio.run(run())
    assert broker.ids() == [["first"], ["r0", "r1", "r2"]]


def test_a_full_batch_leaves_whatever_is_in_flight() -> None:
    broker = Broker()

    async def run() -> None:
        batcher = Batcher(served(max_batch_size=4, max_delay_ms=1000), broker.publish, max_inflight=1)
        await batcher.submit(request_id="first", inputs=rows(), expires_s=5)
        await asyncio.gather(
            *(batcher.submit(request_id=f"r{i}", inputs=rows(2), expires_s=5) for i in range(2))
        )

    asyncio.run(asyncio.wait_for(run(), 0.5))
    assert broker.ids() == [["first"], ["r0", "r1"]]


def test_zero_delay_disables_batching() -> None:
    broker = Broker()

    async def run() -> None:
        batcher = Batcher(served(max_delay_ms=0), broker.publish)
        await asyncio.gather(
            *(batcher.submit(request_id=f"r{i}", inputs=rows(), expires_s=5) for i in range(2))
        )

    asyncio.run(run())
    assert broker.ids() == [["r0"], ["r1"]]


def test_expiry_is_the_latest_deadline_and_none_with_an_async_request() -> None:
    async def run(expiries: list[float | None]) -> Broker:
        broker = Broker()
        batcher = Batcher(served(), broker.publish)
        await batcher.submit(request_id="first", inputs=rows(), expires_s=1)
        await asyncio.gather(
            *(
                batcher.submit(request_id=f"r{i}", inputs=rows(), expires_s=e, awaited=e is not None)
                for i, e in enumerate(expiries)
            )
        )
        return broker

    assert asyncio.run(run([1.0, 9.0])).batches[1][1] == pytest.approx(9.0, abs=0.2)
    assert asyncio.run(run([1.0, None])).batches[1][1] is None


def test_a_broker_failure_reaches_every_request_and_frees_the_slot() -> None:
    broker = Broker(fail=True)

    async def run() -> tuple[list[BaseException | None], Batcher]:
        batcher = Batcher(served(), broker.publish, max_inflight=1)
        outcome = await asyncio.gather(
            *(batcher.submit(request_id=f"r{i}", inputs=rows(), expires_s=5) for i in range(3)),
            return_exceptions=True,
        )
        return outcome, batcher

    outcome, batcher = asyncio.run(run())
    assert all(isinstance(r, ConnectionError) for r in outcome)
    assert not batcher._inflight


def test_a_cancelled_request_leaves_the_open_batch_and_the_rest_still_go() -> None:
    """Its client went away while its batch was open: the batch leaves without it (the caller
    learns it by RequestWithdrawn), even when it was the batch's first request."""
    broker = Broker()

    async def run() -> list[str]:
        batcher = Batcher(served(max_delay_ms=50), broker.publish, max_inflight=1)
        await batcher.submit(request_id="first", inputs=rows(), expires_s=5)  # in flight: the rest wait
        waiting = {
            name: asyncio.ensure_future(batcher.submit(request_id=name, inputs=rows(2), expires_s=5))
            for name in ("gone", "stays", "also-gone")
        }
        await asyncio.sleep(0.01)
        outcomes = []
        for name in ("gone", "also-gone"):
            waiting[name].cancel()
            try:
                await waiting[name]
            except RequestWithdrawn:
                outcomes.append(f"{name}: withdrawn")
        batcher.answered("first")  # frees the slot: the open batch leaves
        await asyncio.wait_for(waiting["stays"], 1)
        return outcomes

    assert asyncio.run(run()) == ["gone: withdrawn", "also-gone: withdrawn"]
    assert broker.ids() == [["first"], ["stays"]]


def test_a_request_cancelled_after_its_batch_left_is_not_withdrawn() -> None:
    broker = Broker()

    async def run() -> bool:
        batcher = Batcher(served(max_delay_ms=0), broker.publish)
        sent = asyncio.ensure_future(batcher.submit(request_id="sent", inputs=rows(), expires_s=5))
        await asyncio.sleep(0.01)
        return batcher.withdraw("sent") or not sent.done()

    assert asyncio.run(run()) is False
    assert broker.ids() == [["sent"]]


def test_a_batch_emptied_by_cancellations_is_never_sent() -> None:
    broker = Broker()

    async def run() -> None:
        batcher = Batcher(served(max_delay_ms=20), broker.publish, max_inflight=1)
        await batcher.submit(request_id="first", inputs=rows(), expires_s=5)
        gone = asyncio.ensure_future(batcher.submit(request_id="gone", inputs=rows(), expires_s=5))
        await asyncio.sleep(0.01)
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        batcher.answered("first")
        await asyncio.sleep(0.05)

    asyncio.run(run())
    assert broker.ids() == [["first"]]
