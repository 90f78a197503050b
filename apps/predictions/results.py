"""Await Celery results without a thread per request.

Celery's Redis result backend SETs `celery-task-meta-<task id>` and PUBLISHes the same payload on
a channel of that name. Task ids minted by this API process start with a per-process token, so
one PSUBSCRIBE on `celery-task-meta-<token>.*` per event loop delivers exactly this process's
results; a dict maps task ids to the futures of the waiting requests.

Pub/sub delivers at most once: a message is lost only while the subscription is down (reconnect,
Redis restart, the client dropped for a full output buffer). The worker stores a result before
publishing it, so each time the subscription is (re)established (Redis confirms it with a
`psubscribe` message) the reader fetches the stored results of every request still waiting.
Waiters also poll their own key every POLL_INTERVAL_S as a last resort; that used to be every
second, and then every request of a loaded API that waited longer than that polled.
"""

import asyncio
import logging
import uuid
from typing import Any, cast

import redis.asyncio as aioredis

from inference_common.results import RESULT_PREFIX
from inference_project.celery_app import app as celery_app
from inference_project.redis_clients import redis_async

logger = logging.getLogger(__name__)

# redis-py types every reply `bytes | str`; our clients never set decode_responses, so the
# casts below to bytes are exact.

POLL_INTERVAL_S = 5.0
CHECK_CHUNK = 500  # result keys per MGET when the subscription comes back


class ResultWaiter:
    def __init__(self, redis_url: str | None = None) -> None:
        """`redis_url` None: the platform's Redis (`REDIS_URL`, or the master the Sentinels
        name with `REDIS_SENTINELS`; the subscription then follows a failover when it
        resubscribes, and the stored results are checked again as after any gap)."""
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
            return cast("bytes", stored)
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
                        return cast("bytes", payload)
        finally:
            self.forget(task_id)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        pattern = f"{RESULT_PREFIX}{self.token}.*"
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(pattern)
                async for message in pubsub.listen():
                    if message["type"] == "psubscribe":
                        # Subscribed, first or again: redis-py resubscribes by itself after a
                        # dropped connection, so its confirmation is the one sign of a gap.
                        await self._check_waiting()
                        continue
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

    async def _check_waiting(self) -> None:
        """Answer, from the stored results, the waiting requests whose message may have been
        published while the subscription was down (or before it first came up)."""
        waiting = [task_id for task_id, future in self._futures.items() if not future.done()]
        for start in range(0, len(waiting), CHECK_CHUNK):
            chunk = waiting[start : start + CHECK_CHUNK]
            for task_id, payload in zip(
                chunk, await self.redis.mget([RESULT_PREFIX + t for t in chunk]), strict=True
            ):
                future = self._futures.get(task_id)
                if payload is not None and future is not None and not future.done():
                    future.set_result(cast("bytes", payload))


_waiters: dict[int, ResultWaiter] = {}


def result_waiter_get() -> ResultWaiter:
    """The waiter of the running event loop (one per loop: asyncio objects are loop-bound)."""
    loop_id = id(asyncio.get_running_loop())
    waiter = _waiters.get(loop_id)
    if waiter is None:
        waiter = _waiters[loop_id] = ResultWaiter()
    return waiter


def result_payload_decode(payload: bytes) -> dict[str, Any]:
    """Celery's stored meta (`status`, `result`, ...) with failures turned into exceptions."""
    meta: dict[str, Any] = celery_app.backend.decode_result(payload)
    return meta
