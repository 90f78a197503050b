"""Dynamic batching at the producer: requests for one model version leave as one Celery task.

A batch is sent when it holds `max_batch_size` rows, or `max_delay_ms` after it opened, but
never more than `max_inflight` batches of this process wait for their answers at once: while they
do, the open batch keeps filling. So an idle model answers a lone request at once (nothing in
flight, no wait), and a busy one gets batches as large as the load allows (what Triton's dynamic
batcher does with its queue).

The worker runs one predict for the whole batch and stores each request's answer under the
request's own id (workers/results.py), so waiting, async jobs, idempotent retries and redelivery
work per request exactly as with one task per request. What is saved is the broker traffic and
the per-task work of Celery and TensorFlow, which dominate for a small model.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from apps.predictions.selectors import ServedModel
from inference_common.wire import tensor_encode


class RequestWithdrawn(asyncio.CancelledError):
    """The caller was cancelled (its client went away) while its request was still in the open
    batch: the batch leaves without it, and no worker will see it."""


Publish = Callable[[ServedModel, list[dict[str, Any]], float | None], Awaitable[None]]


@dataclass
class _Batch:
    parts: list[dict[str, Any]] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    rows: int = 0
    expires_at: float | None = 0.0  # loop time; None: no deadline (an async job is in it)
    timer: asyncio.TimerHandle | None = None
    due: bool = False  # its delay passed while all in-flight slots were taken
    unanswered: set[str] = field(default_factory=set)  # ids whose answer this process awaits
    flushed: bool = False  # handed to `_send` (or emptied by withdrawals)


class Batcher:
    """The open batch of one model version in one event loop."""

    def __init__(
        self, served: ServedModel, publish: Publish, max_inflight: int = 2, *, eager: bool = True
    ) -> None:
        """`eager`: a batch leaves at once while none of this batcher's is in flight; False:
        each waits its `max_delay_ms` (unless full)."""
        self.served = served
        self.eager = eager
        self.publish = publish
        self.max_rows = max(1, served.max_batch_size)
        self.max_delay_s = max(0.0, served.max_delay_ms / 1000)
        self.max_inflight = max(1, max_inflight)
        self._open: _Batch | None = None
        self._inflight: set[int] = set()  # ids of sent batches whose answers are still awaited
        self._batch_of: dict[str, _Batch] = {}

    async def submit(
        self, *, request_id: str, inputs: dict[str, np.ndarray], expires_s: float | None, awaited: bool = True
    ) -> None:
        """Add a request; returns once its batch was handed to the broker (or raises why not).

        `awaited`: this process waits for the answer and will call `answered(request_id)`.
        """
        loop = asyncio.get_running_loop()
        rows = len(next(iter(inputs.values())))
        batch = self._open
        if batch is not None and batch.rows + rows > self.max_rows:
            self._flush(batch)
            batch = None
        if batch is None:
            batch = self._open = _Batch()
            if self.max_delay_s > 0 and (self._inflight or not self.eager):
                batch.timer = loop.call_later(self.max_delay_s, self._timer_fired, batch)
        batch.parts.append(
            {"id": request_id, "inputs": {name: tensor_encode(a, view=True) for name, a in inputs.items()}}
        )
        batch.rows += rows
        if expires_s is None or batch.expires_at is None:
            batch.expires_at = None
        else:
            batch.expires_at = max(batch.expires_at, loop.time() + expires_s)
        if awaited:
            batch.unanswered.add(request_id)
            self._batch_of[request_id] = batch
        waiter: asyncio.Future[None] = loop.create_future()
        batch.waiters.append(waiter)
        if batch.rows >= self.max_rows or self.max_delay_s == 0 or (self.eager and not self._inflight):
            self._flush(batch)
        try:
            await waiter
        except asyncio.CancelledError:
            if self.withdraw(request_id, waiter):
                raise RequestWithdrawn(request_id) from None
            raise

    def withdraw(self, request_id: str, waiter: asyncio.Future[None] | None = None) -> bool:
        """Take a request out of the open batch (its client went away before the batch left);
        False when its batch was already sent."""
        batch = self._open
        ids = [part["id"] for part in batch.parts] if batch is not None else []
        if batch is None or request_id not in ids:
            return False
        index = ids.index(request_id)
        part = batch.parts.pop(index)
        batch.rows -= next(iter(part["inputs"].values()))["shape"][0]
        batch.unanswered.discard(request_id)
        self._batch_of.pop(request_id, None)
        if waiter is not None and waiter in batch.waiters:
            batch.waiters.remove(waiter)
        if not batch.parts:
            if batch.timer is not None:
                batch.timer.cancel()
            batch.flushed = True  # nothing left to send
            self._open = None
        return True

    def answered(self, request_id: str) -> None:
        """The answer of `request_id` arrived (or its wait ended): free its batch's slot when it
        was the last one awaited, and send the open batch if it was waiting for a slot."""
        batch = self._batch_of.pop(request_id, None)
        if batch is None:
            return
        batch.unanswered.discard(request_id)
        if not batch.unanswered and id(batch) in self._inflight:
            self._inflight.discard(id(batch))
            if self._open is not None and self._open.due:
                self._flush(self._open)

    def _timer_fired(self, batch: _Batch) -> None:
        batch.timer = None
        if len(self._inflight) < self.max_inflight:
            self._flush(batch)
        else:
            batch.due = True

    def _flush(self, batch: _Batch) -> None:
        if batch.flushed:
            return
        batch.flushed = True
        if self._open is batch:
            self._open = None
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if batch.unanswered:
            self._inflight.add(id(batch))
        if batch.parts:
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: _Batch) -> None:
        loop = asyncio.get_running_loop()
        expires = None if batch.expires_at is None else max(0.1, batch.expires_at - loop.time())
        try:
            await self.publish(self.served, batch.parts, expires)
        except Exception as exc:
            for request_id in list(batch.unanswered):
                self.answered(request_id)
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_result(None)


_batchers: dict[tuple[int, str, int, bool, str], Batcher] = {}


def batcher_get(
    served: ServedModel, publish: Publish, max_inflight: int = 2, *, eager: bool = True, lane: str = ""
) -> Batcher:
    """The batcher of `served` in this event loop; one per `lane` (a priority level: a request
    never waits for a slot behind another level's batches)."""
    key = (id(asyncio.get_running_loop()), served.name, served.version, eager, lane)
    batcher = _batchers.get(key)
    if batcher is None or (batcher.served.max_batch_size, batcher.served.max_delay_ms) != (
        served.max_batch_size,
        served.max_delay_ms,
    ):
        batcher = _batchers[key] = Batcher(served, publish, max_inflight, eager=eager)
    return batcher
