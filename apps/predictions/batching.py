"""Dynamic batching at the producer: requests for one model version that arrive within
`max_delay_ms` (or until `max_batch_size` rows) leave as one Celery task.

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
from apps.predictions.wire import tensor_encode

Publish = Callable[[ServedModel, list[dict[str, Any]], float | None], Awaitable[None]]


@dataclass
class _Batch:
    parts: list[dict[str, Any]] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    rows: int = 0
    expires_at: float | None = 0.0  # loop time; None: no deadline (an async job is in it)
    timer: asyncio.TimerHandle | None = None


class Batcher:
    """The open batch of one model version in one event loop."""

    def __init__(self, served: ServedModel, publish: Publish) -> None:
        self.served = served
        self.publish = publish
        self.max_rows = max(1, served.max_batch_size)
        self.max_delay_s = max(0.0, served.max_delay_ms / 1000)
        self._open: _Batch | None = None

    async def submit(
        self, *, request_id: str, inputs: dict[str, np.ndarray], expires_s: float | None
    ) -> None:
        """Add a request; returns once its batch was handed to the broker (or raises why not)."""
        loop = asyncio.get_running_loop()
        rows = len(next(iter(inputs.values())))
        batch = self._open
        if batch is not None and batch.rows + rows > self.max_rows:
            self._flush(batch)
            batch = None
        if batch is None:
            batch = self._open = _Batch()
            if self.max_delay_s > 0:
                batch.timer = loop.call_later(self.max_delay_s, self._flush, batch)
        batch.parts.append(
            {"id": request_id, "inputs": {name: tensor_encode(a) for name, a in inputs.items()}}
        )
        batch.rows += rows
        if expires_s is None or batch.expires_at is None:
            batch.expires_at = None
        else:
            batch.expires_at = max(batch.expires_at, loop.time() + expires_s)
        waiter: asyncio.Future[None] = loop.create_future()
        batch.waiters.append(waiter)
        if batch.rows >= self.max_rows or self.max_delay_s == 0:
            self._flush(batch)
        await waiter

    def _flush(self, batch: _Batch) -> None:
        if self._open is batch:
            self._open = None
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if batch.waiters and not batch.waiters[0].done():
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: _Batch) -> None:
        loop = asyncio.get_running_loop()
        expires = None if batch.expires_at is None else max(0.1, batch.expires_at - loop.time())
        try:
            await self.publish(self.served, batch.parts, expires)
        except Exception as exc:
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_result(None)


_batchers: dict[tuple[int, str, int], Batcher] = {}


def batcher_get(served: ServedModel, publish: Publish) -> Batcher:
    key = (id(asyncio.get_running_loop()), served.name, served.version)
    batcher = _batchers.get(key)
    if batcher is None or (batcher.served.max_batch_size, batcher.served.max_delay_ms) != (
        served.max_batch_size,
        served.max_delay_ms,
    ):
        batcher = _batchers[key] = Batcher(served, publish)
    return batcher
