"""Producer side of a prediction: enqueue on the model's queue, await or record the result.

Every protocol view (native, TF Serving, Open Inference Protocol) ends here.
"""

import asyncio
import functools
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from kombu.exceptions import OperationalError
from redis import Redis
from redis.exceptions import RedisError

from apps.predictions.admission import admission_check
from apps.predictions.batching import Batcher, batcher_get
from apps.predictions.errors import ApiError
from apps.predictions.observability import request_identified
from apps.predictions.results import result_payload_decode, result_waiter_get
from apps.predictions.selectors import ServedModel
from inference_common.task_names import PREDICT_BATCH_TASK
from inference_common.tensor_store import batch_bytes, tensors_offload
from inference_common.wire import tensor_decode
from inference_project.celery_app import app as celery_app
from inference_project.redis_clients import redis_sync

JOB_PREFIX = "inference:job:"
IDEMPOTENCY_PREFIX = "inference:idem:"
RETRY_AFTER_S = "1"

# Publishing goes through kombu's blocking client; a small pool keeps it off the event loop, so a
# slow or absent Redis delays only the requests that publish, never the whole process.
_publisher = ThreadPoolExecutor(max_workers=4, thread_name_prefix="celery-publish")


@dataclass(frozen=True)
class PredictionResult:
    id: str
    model: str
    version: int
    outputs: dict[str, np.ndarray]


def broker_unavailable() -> ApiError:
    return ApiError(
        503,
        "unavailable",
        "the queue is unreachable; retry shortly",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def _publish_batch(served: ServedModel, parts: list[dict[str, Any]], expires: float | None) -> None:
    rows = sum(next(iter(part["inputs"].values()))["shape"][0] for part in parts)
    if batch_bytes(parts) > settings.INFERENCE_TENSOR_OFFLOAD_BYTES:
        ttl = int(expires) + 60 if expires else settings.CELERY_RESULT_EXPIRES
        tensors_offload(_tensor_redis(), parts, ttl_s=ttl)
    celery_app.send_task(
        PREDICT_BATCH_TASK,
        # "sent": the worker reports the time a batch waited in the queue.
        args=[{"model": served.name, "version": served.version, "parts": parts, "sent": time.time()}],
        queue=served.queue,
        expires=expires,
        # Flower and logs show this instead of the tensor bytes.
        argsrepr=f"({served.name} v{served.version}, {len(parts)} requests, {rows} rows)",
    )


async def _publish_batch_async(
    served: ServedModel, parts: list[dict[str, Any]], expires: float | None
) -> None:
    try:
        await asyncio.get_running_loop().run_in_executor(
            _publisher, lambda: _publish_batch(served, parts, expires)
        )
    except (OperationalError, RedisError, OSError) as exc:
        raise broker_unavailable() from exc


@functools.cache
def _tensor_redis() -> Redis:
    return redis_sync(large_values=True)


def _batcher(served: ServedModel) -> Batcher:
    return batcher_get(served, _publish_batch_async, settings.INFERENCE_MAX_INFLIGHT_BATCHES)


def _result_from_meta(task_id: str, meta: dict[str, Any]) -> PredictionResult:
    status = meta.get("status")
    if status == "REVOKED":
        raise ApiError(504, "timeout", "the request expired before a worker reached it")
    if status != "SUCCESS":
        raise ApiError(500, "inference_failed", f"inference failed ({status}): {meta.get('result')}")
    result = meta["result"]
    if "error" in result:
        code = result["error"]["code"]
        status_code = 404 if code == "not_found" else 503
        headers = {"Retry-After": RETRY_AFTER_S} if status_code == 503 else None
        raise ApiError(status_code, code, result["error"]["message"], headers=headers)
    return PredictionResult(
        id=task_id,
        model=result["model"],
        version=result["version"],
        outputs={name: tensor_decode(wire) for name, wire in result["outputs"].items()},
    )


@dataclass(frozen=True)
class Caller:
    """Who asks and under which terms: owner (API key id), its rate, idempotency key, deadline."""

    owner: str
    rate: int
    deadline_s: float
    idempotency_key: str | None = None


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
) -> tuple[str, bool]:
    """A fresh task id, or the id already claimed by this caller's Idempotency-Key.

    Returns (task id, fresh). The same key with a different request body is refused (422). The
    request is fingerprinted only when it carries a key: hashing tensors is not free.
    """
    waiter = result_waiter_get()
    task_id = waiter.new_task_id()
    if not caller.idempotency_key:
        return task_id, True
    fingerprint = request_fingerprint(served, inputs)
    record = (
        IDEMPOTENCY_PREFIX + hashlib.sha256(f"{caller.owner}\0{caller.idempotency_key}".encode()).hexdigest()
    )
    if await waiter.redis.set(record, f"{task_id} {fingerprint}", nx=True, ex=settings.CELERY_RESULT_EXPIRES):
        return task_id, True
    existing = await waiter.redis.get(record)
    if existing is None:  # expired between the two calls
        return await _task_id_claim(caller=caller, served=served, inputs=inputs)
    claimed_id, claimed_fingerprint = existing.decode().split(" ")
    if claimed_fingerprint != fingerprint:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
            field="Idempotency-Key",
        )
    return claimed_id, False


async def _idempotency_release(caller: Caller) -> None:
    """After a timeout nothing was computed (the task expired): let a retry compute again."""
    if caller.idempotency_key:
        record = (
            IDEMPOTENCY_PREFIX
            + hashlib.sha256(f"{caller.owner}\0{caller.idempotency_key}".encode()).hexdigest()
        )
        await result_waiter_get().redis.delete(record)


async def prediction_run(
    *, served: ServedModel, inputs: dict[str, np.ndarray], caller: Caller
) -> PredictionResult:
    """Enqueue and wait up to the caller's deadline; 504 after that.

    The task expires at the same deadline, so workers skip it once nobody waits for it. With an
    Idempotency-Key, a repeated request waits for (or returns) the first one's result.
    """
    try:
        await admission_check(owner=caller.owner, rate=caller.rate, queue=served.queue)
        task_id, fresh = await _task_id_claim(caller=caller, served=served, inputs=inputs)
        request_identified(task_id)
        waiter = result_waiter_get()
        future = waiter.expect(task_id)
        try:
            if fresh:
                await _batcher(served).submit(request_id=task_id, inputs=inputs, expires_s=caller.deadline_s)
            payload = await waiter.wait(task_id, future, caller.deadline_s, check_first=not fresh)
        finally:
            waiter.forget(task_id)
            _batcher(served).answered(task_id)
    except TimeoutError:
        await _idempotency_release(caller)
        raise ApiError(504, "timeout", f"no result within {caller.deadline_s:g}s") from None
    except (RedisError, OSError) as exc:
        raise broker_unavailable() from exc
    return _result_from_meta(task_id, result_payload_decode(payload))


async def prediction_enqueue(*, served: ServedModel, inputs: dict[str, np.ndarray], caller: Caller) -> str:
    """Enqueue without waiting; the job id is then polled with `prediction_status`."""
    try:
        await admission_check(owner=caller.owner, rate=caller.rate, queue=served.queue)
        task_id, fresh = await _task_id_claim(caller=caller, served=served, inputs=inputs)
        request_identified(task_id)
        if not fresh:
            return task_id
        job = json.dumps(
            {"model": served.name, "version": served.version, "owner": caller.owner, "created": time.time()}
        )
        await result_waiter_get().redis.set(JOB_PREFIX + task_id, job, ex=settings.CELERY_RESULT_EXPIRES)
    except (RedisError, OSError) as exc:
        raise broker_unavailable() from exc
    await _batcher(served).submit(request_id=task_id, inputs=inputs, expires_s=None, awaited=False)
    return task_id


async def prediction_status(
    *, job_id: str, owner: str
) -> tuple[str, PredictionResult | ApiError | None, dict[str, Any]]:
    """(`pending` | `done` | `failed`, result or error, job record); 404 for unknown jobs."""
    redis = result_waiter_get().redis
    try:
        job_raw, payload = await redis.mget(JOB_PREFIX + job_id, "celery-task-meta-" + job_id)
    except (RedisError, OSError) as exc:
        raise broker_unavailable() from exc
    job = json.loads(job_raw) if job_raw else None
    if job is None or job["owner"] != owner:
        raise ApiError(404, "not_found", f"no prediction job {job_id!r}", field="id")
    if payload is None:
        return "pending", None, job
    try:
        return "done", _result_from_meta(job_id, result_payload_decode(payload)), job
    except ApiError as exc:
        return "failed", exc, job
