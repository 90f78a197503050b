"""Producer side of a prediction: enqueue on the model's queue, await or record the result.

Every protocol view (native, TF Serving, Open Inference Protocol) ends here.
"""

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from apps.predictions.errors import ApiError
from apps.predictions.results import result_payload_decode, result_waiter_get
from apps.predictions.selectors import ServedModel
from apps.predictions.wire import tensor_decode, tensor_encode
from inference_project.celery_app import app as celery_app

PREDICT_TASK = "inference.predict"
JOB_PREFIX = "inference:job:"
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


def _publish(
    *, task_id: str, served: ServedModel, inputs: dict[str, np.ndarray], expires: float | None
) -> None:
    rows = len(next(iter(inputs.values())))
    celery_app.send_task(
        PREDICT_TASK,
        args=[
            {
                "model": served.name,
                "version": served.version,
                "inputs": {name: tensor_encode(array) for name, array in inputs.items()},
            }
        ],
        queue=served.queue,
        task_id=task_id,
        expires=expires,
        # Flower and logs show this instead of the tensor bytes.
        argsrepr=f"({served.name} v{served.version}, {rows} rows)",
    )


async def _publish_async(**kwargs: Any) -> None:
    try:
        await asyncio.get_running_loop().run_in_executor(_publisher, lambda: _publish(**kwargs))
    except (OperationalError, RedisError, OSError) as exc:
        raise broker_unavailable() from exc


def _result_from_meta(task_id: str, meta: dict[str, Any]) -> PredictionResult:
    status = meta.get("status")
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


async def prediction_run(
    *, served: ServedModel, inputs: dict[str, np.ndarray], deadline_s: float
) -> PredictionResult:
    """Enqueue and wait up to `deadline_s` seconds; 504 after that.

    The task expires at the same deadline, so workers skip it once nobody waits for it.
    """
    waiter = result_waiter_get()
    task_id = waiter.new_task_id()
    future = waiter.expect(task_id)
    try:
        await _publish_async(task_id=task_id, served=served, inputs=inputs, expires=deadline_s)
        payload = await waiter.wait(task_id, future, deadline_s)
    except TimeoutError:
        raise ApiError(504, "timeout", f"no result within {deadline_s:g}s") from None
    except (RedisError, OSError) as exc:
        raise broker_unavailable() from exc
    finally:
        waiter.forget(task_id)
    return _result_from_meta(task_id, result_payload_decode(payload))


async def prediction_enqueue(*, served: ServedModel, inputs: dict[str, np.ndarray], owner: str) -> str:
    """Enqueue without waiting; the job id is then polled with `prediction_status`."""
    waiter = result_waiter_get()
    task_id = waiter.new_task_id()
    job = json.dumps(
        {"model": served.name, "version": served.version, "owner": owner, "created": time.time()}
    )
    try:
        await waiter.redis.set(JOB_PREFIX + task_id, job, ex=settings.CELERY_RESULT_EXPIRES)
    except (RedisError, OSError) as exc:
        raise broker_unavailable() from exc
    await _publish_async(task_id=task_id, served=served, inputs=inputs, expires=None)
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
