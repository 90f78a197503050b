"""Await Celery results without a thread per request.

Celery's Redis result backend SETs `celery-task-meta-<task id>` and PUBLISHes the same payload on
a channel of that name. Task ids minted by this API process start with a per-process token, so
one PSUBSCRIBE on `celery-task-meta-<token>.*` per event loop delivers exactly this process's
results; a dict maps task ids to the futures of the waiting requests. If a message is missed
(reconnect, Redis restart), waiters fall back to polling the result key every second.
"""

import asyncio
import logging
import uuid
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings

from inference_project.celery_app import app as celery_app
from inference_project.redis_clients import redis_async

logger = logging.getLogger(__name__)

RESULT_PREFIX = "celery-task-meta-"
POLL_INTERVAL_S = 1.0


class ResultWaiter:
    def __init__(self, redis_url: str) -> None:
        self.token = uuid.uuid4().hex[:12]
        self.redis = redis_async(redis_url)
        self._futures: dict[str, asyncio.Future[bytes]] = {}
        self._reader: asyncio.Task[None] | None = None

    def new_task_id(self) -> str:
        return f"{self.token}.{uuid.uuid4().hex}"

    def expect(self, task_id: str) -> asyncio.Future[bytes]:
        """Register interest before the task is sent, so a fast answer cannot be missed."""
        self._ensure_reader()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._futures[task_id] = future
        return future

    def forget(self, task_id: str) -> None:
        self._futures.pop(task_id, None)

    async def wait(
        self, task_id: str, future: asyncio.Future[bytes], within: float, *, check_first: bool = False
    ) -> bytes:
        """The raw result payload; raises TimeoutError after `within` seconds.

        `check_first` looks for a stored result before waiting (a repeated idempotent request).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        if check_first and (stored := await self.redis.get(RESULT_PREFIX + task_id)) is not None:
            self.forget(task_id)
            return stored
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(task_id)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), min(POLL_INTERVAL_S, remaining))
                except TimeoutError:
                    payload = await self.redis.get(RESULT_PREFIX + task_id)
                    if payload is not None:
                        return payload
        finally:
            self.forget(task_id)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        pattern = f"{RESULT_PREFIX}{self.token}.*"
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                async for message in pubsub.listen():
                    if message["type"] != "pmessage":
                        continue
                    task_id = message["channel"].decode().removeprefix(RESULT_PREFIX)
                    future = self._futures.get(task_id)
                    if future is not None and not future.done():
                        future.set_result(message["data"])
            except (aioredis.RedisError, OSError) as exc:
                logger.warning("result subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                await pubsub.aclose()


_waiters: dict[int, ResultWaiter] = {}


def result_waiter_get() -> ResultWaiter:
    """The waiter of the running event loop (one per loop: asyncio objects are loop-bound)."""
    loop_id = id(asyncio.get_running_loop())
    waiter = _waiters.get(loop_id)
    if waiter is None:
        waiter = _waiters[loop_id] = ResultWaiter(settings.REDIS_URL)
    return waiter


def result_payload_decode(payload: bytes) -> dict[str, Any]:
    """Celery's stored meta (`status`, `result`, ...) with failures turned into exceptions."""
    return celery_app.backend.decode_result(payload)
