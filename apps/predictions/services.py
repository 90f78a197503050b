"""Producer side of a prediction, behind the data plane: admit, claim an idempotency key, batch,
enqueue on the model's queue, and await (or record) the answer.

A request whose caller is cancelled (the client disconnected or cancelled its gRPC call) is taken
out of its batch while the batch is open; once the batch has left, a cancellation is stored under
the request's id (SET NX, never over an answer), which the worker reads in the lookup of answered
requests it makes anyway and skips. An async job is cancelled the same way by
`prediction_job_cancel`. Either frees the request's Idempotency-Key claim, so a retry computes.
"""

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np
from django.conf import settings
from kombu.exceptions import OperationalError
from prometheus_client import Counter
from redis import Redis
from redis.exceptions import RedisError

from apps.predictions import idempotency
from apps.predictions.admission import admission_check
from apps.predictions.batching import Batcher, Publish, RequestWithdrawn, batcher_get
from apps.predictions.errors import ApiError, unavailable
from apps.predictions.observability import request_identified
from apps.predictions.replication import Replication
from apps.predictions.results import result_payload_decode, result_waiter_get
from apps.predictions.selectors import ServedModel
from apps.predictions.types import Caller, InferenceResponse
from inference_common.priority import LOW, MESSAGE_PRIORITY, NORMAL
from inference_common.results import (
    CANCELLED,
    Failure,
    cancelled_encode,
    is_cancelled,
    result_decode,
    result_key,
    task_meta,
)
from inference_common.shm_tensors import ShmRegion
from inference_common.task_names import PREDICT_BATCH_TASK
from inference_common.tensor_store import VOLATILE, batch_bytes, tensors_offload, tensors_to_shm
from inference_project.celery_app import app as celery_app
from inference_project.redis_clients import redis_sync

logger = logging.getLogger(__name__)

JOB_PREFIX = "inference:job:"
CANCELLATIONS = Counter(
    "inference_requests_cancelled_total",
    "Requests cancelled before a worker answered them, by model and stage: batcher (taken out of "
    "the open batch: its client went away first), queued (marked for the worker to skip), job "
    "(an async job deleted while pending).",
    ["model", "stage"],
)
PRIORITIES = Counter(
    "inference_requests_by_priority_total",
    "Requests sent to a worker, by model and priority level (shadow copies count as low).",
    ["model", "priority"],
)
OFFLOADED = Counter(
    "inference_offloaded_batches_total",
    "Batches whose tensors went beside their task, by where: shm (shared memory), tensor_redis, broker.",
    ["store"],
)
TENSOR_STORE_FALLBACKS = Counter(
    "inference_tensor_store_fallbacks_total",
    "Batches of sync requests whose tensors went to the broker's Redis because the tensor Redis failed.",
)
# This process's shared-memory region (_shm_region), once the first offload tried to make it.
_shm: dict[str, ShmRegion | None] = {}
_shm_lock = threading.Lock()
_background: set[asyncio.Task[None]] = set()  # referenced until done (asyncio's advice)
# Cancellations not yet written: (request id, its claim, whether a worker may see it).
_cancellations: list[tuple[str, idempotency.Claim | None, bool]] = []

# Publishing goes through kombu's blocking client; a small pool keeps it off the event loop, so a
# slow or absent Redis delays only the requests that publish, never the whole process.
_publisher = ThreadPoolExecutor(max_workers=4, thread_name_prefix="celery-publish")
_replication = Replication()


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _batch_repr(served: ServedModel, *, requests: int, rows: int) -> str:
    """What Flower and logs show for a batch instead of its tensor bytes."""
    return f"({served.name} v{served.version}, {_counted(requests, 'request')}, {_counted(rows, 'row')})"


def _publish_batch(
    served: ServedModel, parts: list[dict[str, Any]], expires: float | None, priority: str
) -> None:
    rows = sum(next(iter(part["inputs"].values()))["shape"][0] for part in parts)
    if batch_bytes(parts) > settings.INFERENCE_TENSOR_OFFLOAD_BYTES:
        _tensors_offload(parts, expires)
    celery_app.send_task(
        PREDICT_BATCH_TASK,
        # "sent": the worker reports the time a batch waited in the queue.
        args=[{"model": served.name, "version": served.version, "parts": parts, "sent": time.time()}],
        queue=served.queue,
        # The level's list of the queue (inference_common/priority.py), popped highest first.
        priority=MESSAGE_PRIORITY[priority],
        expires=expires,
        # Flower and logs show this instead of the tensor bytes.
        argsrepr=_batch_repr(served, requests=len(parts), rows=rows),
    )


async def _publish_batch_async(
    served: ServedModel, parts: list[dict[str, Any]], expires: float | None, *, priority: str = NORMAL
) -> None:
    try:
        await asyncio.get_running_loop().run_in_executor(
            _publisher, lambda: _publish_batch(served, parts, expires, priority)
        )
        # No deadline: an async job is in the batch (Batcher), and its 202 must survive a failover.
        waiter = result_waiter_get()
        await _replication.confirm(waiter.redis, mark=waiter.token, holds_async_job=expires is None)
    except (OperationalError, RedisError, OSError) as exc:
        raise unavailable() from exc


@functools.cache
def _publisher_of(priority: str) -> Publish:
    """The batch publisher of a priority level, made once per level (not per request)."""
    return functools.partial(_publish_batch_async, priority=priority)


def _tensors_offload(parts: list[dict[str, Any]], expires: float | None) -> None:
    """Store the batch's tensors beside its task (inference_common/tensor_store.py). Sync
    requests' go to this process's shared-memory region when there is one with room, else to the
    tensor Redis when there is one, else (or when it fails) to the broker's Redis, with the async
    jobs' tensors."""
    if expires is not None:
        region = _shm_region()
        if region is not None and tensors_to_shm(region, parts, ttl_s=expires + 5):
            OFFLOADED.labels("shm").inc()
            return
        if settings.INFERENCE_TENSOR_REDIS_URL:
            try:
                tensors_offload(_tensor_redis(volatile=True), parts, ttl_s=int(expires) + 60, store=VOLATILE)
                OFFLOADED.labels("tensor_redis").inc()
                return
            except RedisError as exc:  # down, or full (maxmemory): the broker's Redis takes them
                TENSOR_STORE_FALLBACKS.inc()
                logger.warning("tensor Redis refused a batch (%s): its tensors go to the broker's Redis", exc)
    ttl = int(expires) + 60 if expires else settings.CELERY_RESULT_EXPIRES
    tensors_offload(_tensor_redis(volatile=False), parts, ttl_s=ttl)
    OFFLOADED.labels("broker").inc()


def _shm_region() -> ShmRegion | None:
    """This process's shared-memory region for tensors (INFERENCE_TENSOR_SHM_BYTES), made at the
    first offload; None when off or when it could not be made."""
    with _shm_lock:
        if "region" not in _shm:
            _shm["region"] = None
            if settings.INFERENCE_TENSOR_SHM_BYTES > 0:
                try:
                    _shm["region"] = ShmRegion(settings.INFERENCE_TENSOR_SHM_BYTES)
                except OSError as exc:
                    logger.warning("no shared-memory region for tensors (%s): they go through Redis", exc)
        return _shm["region"]


def _tensors_release(task_id: str) -> None:
    """The request ended: free its tensors' slots in the shared-memory region, if it had any."""
    if (region := _shm.get("region")) is not None:
        region.release(task_id)


@functools.cache
def _tensor_redis(*, volatile: bool) -> Redis:
    return redis_sync(settings.INFERENCE_TENSOR_REDIS_URL if volatile else None, large_values=True)


def _batcher(served: ServedModel, *, shadow: bool = False, priority: str = NORMAL) -> Batcher:
    """The version's batcher at `priority` (each level its own batches and in-flight slots);
    `shadow`: the one of a shadow rollout's copies (never eager, the lowest level)."""
    if shadow:
        served = dataclasses.replace(served, max_delay_ms=settings.INFERENCE_SHADOW_BATCH_DELAY_MS)
        priority = LOW
    return batcher_get(
        served,
        _publisher_of(priority),
        settings.INFERENCE_MAX_INFLIGHT_BATCHES,
        eager=not shadow,
        lane=priority,
    )


def prediction_response(*, task_id: str, served: ServedModel, meta: dict[str, Any]) -> InferenceResponse:
    """The stored answer of `task_id` as a response, or the ApiError it stands for."""
    status = meta.get("status")
    if status == "REVOKED":
        raise ApiError(504, "timeout", "the request expired before a worker reached it")
    if status != "SUCCESS":
        raise ApiError(500, "inference_failed", f"inference failed ({status}): {meta.get('result')}")
    result = result_decode(meta["result"])
    if isinstance(result, Failure) and result.code == CANCELLED:
        raise ApiError(409, CANCELLED, result.message)
    if isinstance(result, Failure):
        if result.code == "not_found":
            raise ApiError(404, result.code, result.message)
        if result.code == "predict_failed":  # the model itself failed: retrying will not help
            raise ApiError(500, result.code, result.message)
        raise unavailable(result.message, code=result.code)
    return InferenceResponse(id=task_id, served=served, outputs=result.outputs)


def request_fingerprint(served: ServedModel, inputs: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(f"{served.name}\0{served.version}".encode())
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        digest.update(f"\0{name}\0{array.dtype}\0{array.shape}\0".encode())
        if array.dtype == object:  # BYTES: the elements, each with its length
            for item in array.ravel():
                digest.update(len(item).to_bytes(8, "little") + item)
        else:
            digest.update(array.tobytes())
    return digest.hexdigest()


async def _task_id_claim(
    *, caller: Caller, served: ServedModel, inputs: dict[str, np.ndarray]
) -> tuple[str, idempotency.Claim | None]:
    """A fresh task id, or with an Idempotency-Key this caller's claim on it
    (apps/predictions/idempotency.py), whose id may be a first attempt's.

    The request is fingerprinted only when it carries a key: hashing tensors is not free.
    """
    waiter = result_waiter_get()
    task_id = waiter.new_task_id()
    if not caller.idempotency_key:
        return task_id, None
    claim = await idempotency.claim(
        waiter.redis,
        idempotency.record_key(caller.owner, caller.idempotency_key),
        task_id=task_id,
        fingerprint=request_fingerprint(served, inputs),
        timeout_s=caller.deadline_s,
    )
    return claim.task_id, claim


async def _submit(
    *,
    served: ServedModel,
    inputs: dict[str, np.ndarray],
    task_id: str,
    expires_s: float | None,
    claim: idempotency.Claim | None,
    shadow: bool = False,
    priority: str = NORMAL,
) -> None:
    """Into the batch; once it is published, the Idempotency-Key claim is marked sent (and given
    up when the publish fails)."""
    PRIORITIES.labels(served.name, LOW if shadow else priority).inc()
    try:
        await _batcher(served, shadow=shadow, priority=priority).submit(
            request_id=task_id, inputs=inputs, expires_s=expires_s, awaited=expires_s is not None
        )
    except Exception:
        if claim is not None:
            await idempotency.abandon(result_waiter_get().redis, claim)
        raise
    if claim is not None:
        await idempotency.mark_sent(result_waiter_get().redis, claim)


async def prediction_run(
    *, served: ServedModel, inputs: dict[str, np.ndarray], caller: Caller
) -> InferenceResponse:
    """Enqueue and wait up to the caller's deadline; 504 after that.

    The task expires at the same deadline, so workers skip it once nobody waits for it. With an
    Idempotency-Key, a repeated request waits for (or returns) the first one's result.
    """
    claim = None
    started = time.monotonic()
    try:
        await admission_check(owner=caller.owner, rate=caller.rate, queue=served.queue)
        task_id, claim = await _task_id_claim(caller=caller, served=served, inputs=inputs)
        fresh = claim is None or claim.fresh
        request_identified(task_id)
        # What is left of the deadline after the claim (a repeat may have waited on a pending one).
        remaining = caller.deadline_s - (time.monotonic() - started)
        waiter = result_waiter_get()
        future = waiter.expect(task_id)
        try:
            if fresh:
                await _submit(
                    served=served,
                    inputs=inputs,
                    task_id=task_id,
                    expires_s=max(0.1, remaining),
                    claim=claim,
                    priority=caller.priority,
                )
            payload = await waiter.wait(task_id, future, remaining, check_first=not fresh)
        except RequestWithdrawn:
            _cancelled(served=served, task_id=task_id, claim=claim, stage="batcher")
            raise
        except asyncio.CancelledError:
            if fresh:  # a repeat leaves the first attempt's task alone
                _cancelled(served=served, task_id=task_id, claim=claim, stage="queued")
            raise
        finally:
            waiter.forget(task_id)
            _batcher(served, priority=caller.priority).answered(task_id)
            _tensors_release(task_id)
    except TimeoutError:
        if claim is not None:
            await idempotency.release(result_waiter_get().redis, claim)
        raise ApiError(504, "timeout", f"no result within {caller.deadline_s:g}s") from None
    except (RedisError, OSError) as exc:
        raise unavailable() from exc
    return prediction_response(task_id=task_id, served=served, meta=result_payload_decode(payload))


def _cancelled(*, served: ServedModel, task_id: str, claim: idempotency.Claim | None, stage: str) -> None:
    """Counted now; the cancellation mark (queued) and the claim's release are written by a task
    of their own (the caller's is being cancelled), all those of one moment in one pipeline:
    hundreds of clients leaving at once must not each take a Redis connection."""
    CANCELLATIONS.labels(served.name, stage).inc()
    _cancellations.append((task_id, claim, stage != "batcher"))
    if len(_cancellations) == 1:
        task = asyncio.get_running_loop().create_task(_cancellations_write())
        _background.add(task)
        task.add_done_callback(_background.discard)


async def _cancellations_write() -> None:
    await asyncio.sleep(0)  # the cancellations of this loop turn go together
    pending = list(_cancellations)
    _cancellations.clear()
    try:
        async with result_waiter_get().redis.pipeline(transaction=False) as pipe:
            for task_id, claim, mark in pending:
                if mark:
                    pipe.set(
                        result_key(task_id),
                        _cancellation_value(task_id),
                        ex=settings.CELERY_RESULT_EXPIRES,
                        nx=True,
                    )
                if claim is not None:
                    idempotency.release_queue(pipe, claim)
            await pipe.execute()
    except (RedisError, OSError):
        logger.warning("could not record %d cancellations", len(pending), exc_info=True)


def _cancellation_value(task_id: str) -> bytes:
    """A cancellation stored as the request's result, as Celery stores a task's."""
    encoded: bytes = celery_app.backend.encode(task_meta(task_id, cancelled_encode()))
    return encoded


async def _cancellation_mark(redis: Any, task_id: str) -> bool:
    """Store a cancellation as the request's result, unless an answer is there: True if stored."""
    stored = await redis.set(
        result_key(task_id), _cancellation_value(task_id), ex=settings.CELERY_RESULT_EXPIRES, nx=True
    )
    return bool(stored)


async def prediction_shadow_run(
    *, served: ServedModel, inputs: dict[str, np.ndarray], timeout_s: float
) -> InferenceResponse:
    """A copy of an answered request sent to a shadow version, answered to nobody: no key's
    admission nor idempotency (apps/predictions/shadow.py sheds it first); TimeoutError after
    `timeout_s`, when the worker skips it too."""
    waiter = result_waiter_get()
    task_id = waiter.new_task_id()
    future = waiter.expect(task_id)
    try:
        await _submit(
            served=served, inputs=inputs, task_id=task_id, expires_s=timeout_s, claim=None, shadow=True
        )
        payload = await waiter.wait(task_id, future, timeout_s)
    finally:
        waiter.forget(task_id)
        _batcher(served, shadow=True).answered(task_id)
        _tensors_release(task_id)
    return prediction_response(task_id=task_id, served=served, meta=result_payload_decode(payload))


async def prediction_job_wait(*, served: ServedModel, job_id: str, timeout_s: float) -> InferenceResponse:
    """An async job's answer once a worker stored it (minted by this process: its result message
    reaches this process's subscription); TimeoutError after `timeout_s`."""
    waiter = result_waiter_get()
    future = waiter.expect(job_id)
    payload = await waiter.wait(job_id, future, timeout_s, check_first=True)
    return prediction_response(task_id=job_id, served=served, meta=result_payload_decode(payload))


async def prediction_enqueue(*, served: ServedModel, inputs: dict[str, np.ndarray], caller: Caller) -> str:
    """Enqueue without waiting; the job id is then polled with `prediction_job_get`."""
    try:
        await admission_check(owner=caller.owner, rate=caller.rate, queue=served.queue)
        task_id, claim = await _task_id_claim(caller=caller, served=served, inputs=inputs)
        request_identified(task_id)
        if claim is not None and not claim.fresh:
            return task_id
        job = json.dumps(
            {"model": served.name, "version": served.version, "owner": caller.owner, "created": time.time()}
        )
        await result_waiter_get().redis.set(JOB_PREFIX + task_id, job, ex=settings.CELERY_RESULT_EXPIRES)
    except (RedisError, OSError) as exc:
        raise unavailable() from exc
    # Returns once the batch is published (and, with INFERENCE_PUBLISH_REPLICAS, replicated).
    await _submit(
        served=served, inputs=inputs, task_id=task_id, expires_s=None, claim=claim, priority=caller.priority
    )
    return task_id


async def prediction_job_cancel(*, job_id: str, owner: str) -> dict[str, Any]:
    """Cancel an async job of `owner` that no worker answered yet (again: the same answer); 404
    for an unknown job (or another key's), 409 once it has an answer."""
    redis = result_waiter_get().redis
    try:
        job_raw = await redis.get(JOB_PREFIX + job_id)
        job = json.loads(job_raw) if job_raw else None
        if job is None or job["owner"] != owner:
            raise ApiError(404, "not_found", f"no prediction job {job_id!r}", field="id")
        if await _cancellation_mark(redis, job_id):
            CANCELLATIONS.labels(str(job["model"]), "job").inc()
        else:
            stored = await redis.get(result_key(job_id))
            if stored is None or not is_cancelled(result_payload_decode(cast("bytes", stored)).get("result")):
                raise ApiError(
                    409, "already_done", f"prediction job {job_id!r} has an answer already", field="id"
                )
    except (RedisError, OSError) as exc:
        raise unavailable() from exc
    return dict(job)


async def prediction_job_get(*, job_id: str, owner: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """An async job's record and, once answered, its stored result meta; 404 for unknown jobs
    (or another key's)."""
    redis = result_waiter_get().redis
    try:
        job_raw, payload = await redis.mget(JOB_PREFIX + job_id, result_key(job_id))
    except (RedisError, OSError) as exc:
        raise unavailable() from exc
    job = json.loads(job_raw) if job_raw else None
    if job is None or job["owner"] != owner:
        raise ApiError(404, "not_found", f"no prediction job {job_id!r}", field="id")
    return job, None if payload is None else result_payload_decode(cast("bytes", payload))
