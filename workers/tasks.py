"""Celery tasks of the workers: thin wrappers over `workers.serving` and `workers.runtime`."""

import logging
import os
from typing import Any, cast

from billiard.process import current_process
from celery import Task, states
from celery.backends.redis import RedisBackend
from celery.exceptions import Reject
from celery.signals import task_retry, worker_init, worker_process_init, worker_process_shutdown, worker_ready
from django.conf import settings
from prometheus_client import multiprocess
from redis.exceptions import RedisError

from inference_common.task_names import PREDICT_BATCH_TASK, PREDICT_TASK
from inference_project.celery_app import app
from inference_project.heap import heap_freeze
from inference_project.metrics import MULTIPROC_DIR
from workers.metrics import RETRIES, metrics_server_start
from workers.placement import child_gpu_pin, cpu_cores, cpu_threads_share
from workers.runtime import runtime_get, runtime_start
from workers.serving import batch_serve

logger = logging.getLogger(__name__)


# Quoted: Task is generic only in celery-types' stubs, not at run time in every celery the
# project runs on (the mechanism comparison's celery < 5.7 raised "not subscriptable").
@app.task(bind=True, name=PREDICT_TASK)
def predict(self: "Task[Any, Any]", request: dict[str, Any]) -> dict[str, Any]:
    """One request per task, no batching: the API uses predict_batch; this is the unbatched
    path (and the naive baseline the benchmark measures against)."""
    # Delivery is at least once (late acks, requeue on a lost child): a redelivered task whose
    # answer is already stored returns it instead of computing it again.
    task_id = cast("str", self.request.id)  # None only outside a running task
    stored = self.backend.get_task_meta(task_id)
    if stored.get("status") == states.SUCCESS:
        logger.info("task %s redelivered after it succeeded; not computed again", task_id)
        result: dict[str, Any] = stored["result"]
        return result
    return runtime_get().run(request)


@app.task(bind=True, name=PREDICT_BATCH_TASK, ignore_result=True)
def predict_batch(self: "Task[Any, Any]", batch: dict[str, Any]) -> dict[str, int]:
    """Several requests for one model version, run as one predict; each answer is stored under
    its request's id. A redelivered batch computes only the requests not yet answered. The batch's
    own return value (counts, shown by Flower) is not stored: nobody waits for the batch's id."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    try:
        # The result backend is always Redis (CELERY_RESULT_BACKEND: ProducerRedisBackend).
        return batch_serve(cast("RedisBackend", self.backend), batch, redelivered=redelivered)
    except RedisError as exc:
        # Redis failed mid-batch (a primary failing over): its answers may not be stored. Acked as
        # failed, the batch would be gone; back on the queue, it runs again on the new primary and
        # computes only what is not yet answered. If the requeue cannot reach Redis either, the
        # message stays unacknowledged and the visibility sweep puts it back.
        raise Reject(f"Redis failed mid-batch ({exc}); back on the queue", requeue=True) from exc


@worker_init.connect
def _share_cores(sender: Any = None, **_: Any) -> None:
    """Before the pool forks: each child gets its share of the cores (workers/placement.py)."""
    if settings.INFERENCE_WORKER_ROLE != "inference" or sender is None:
        return
    concurrency = sender.concurrency  # "auto" is resolved after worker_init: one child per core
    children = int(concurrency) if str(concurrency).isdigit() else cpu_cores()
    threads = cpu_threads_share(children, settings.INFERENCE_CHILD_THREADS)
    if threads is not None:
        logger.info("%d worker children, %d TensorFlow threads each", children, threads)


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """The Celery parent serves the metrics its children write (workers/metrics.py)."""
    if settings.INFERENCE_WORKER_ROLE == "inference":
        metrics_server_start(settings.INFERENCE_WORKER_METRICS_PORT, settings.INFERENCE_WORKER_METRICS_HOST)


for _task in (PREDICT_TASK, PREDICT_BATCH_TASK):
    RETRIES.labels(_task)  # exported from 0 on


@task_retry.connect
def _count_retry(sender: "Task[Any, Any] | None" = None, **_: Any) -> None:
    RETRIES.labels(getattr(sender, "name", "unknown")).inc()


@worker_ready.connect
def _freeze_parent_heap(**_: Any) -> None:
    """The Celery parent's set-up lives as long as it does: its full collections (~90 ms for
    126,000 objects, between two batches) skip it from now on (inference_project/heap.py)."""
    heap_freeze()


@worker_process_init.connect
def _load_models_in_child(**_: Any) -> None:
    """Each child loads its models once, after the fork; the parent never imports TensorFlow."""
    if settings.INFERENCE_WORKER_ROLE != "inference":
        return
    # billiard numbers its pool children (`index`, from 0); billiard-stubs leave it out.
    index: int = current_process().index  # type: ignore[attr-defined]
    device = child_gpu_pin(index)
    if device is not None:
        logger.info("worker child %s pinned to GPU %s", index, device)
    runtime_start(model_names=settings.INFERENCE_WORKER_MODELS)


@worker_process_shutdown.connect
def _unload_models_in_child(**_: Any) -> None:
    if settings.INFERENCE_WORKER_ROLE != "inference":
        return
    runtime_get().shutdown()
    if MULTIPROC_DIR:
        multiprocess.mark_process_dead(os.getpid(), MULTIPROC_DIR)
