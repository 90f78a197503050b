"""One batch task, end to end in the worker: skip what is already answered or was cancelled by its
client (the API stores the cancellation where the answer would go), run the rest as one
predict, store each answer, and record it (metrics, the version's live stats, one JSON log line
per request). The live stats are written after the answers are stored: their round trip never
delays an answer.

The log line carries the request id the API logged for the same request, so the two sides of a
request can be joined in Kibana.
"""

import logging
import time
from typing import Any

from celery.backends.redis import RedisBackend

from inference_common.results import CANCELLED, failure_encode
from inference_common.tensor_store import EXPIRED, UNREACHABLE, tensors_fetch, tensors_forget
from workers.metrics import QUEUE_WAIT, REDELIVERIES, WORKER_REQUESTS
from workers.results import results_existing, results_store
from workers.runtime import runtime_get

logger = logging.getLogger("inference.worker")

# A part whose offloaded tensors cannot be had: expired before a worker reached it (nobody waits
# for it), or where this worker cannot read them, a tensor Redis that does not answer or another
# host's shared memory (its client gets a 503 and may retry).
_TENSORS_MISSING = {
    EXPIRED: failure_encode(EXPIRED, "the request's tensors expired before a worker reached it"),
    UNREACHABLE: failure_encode(UNREACHABLE, "the request's tensors are where this worker cannot read them"),
}


def batch_serve(backend: RedisBackend, batch: dict[str, Any], *, redelivered: bool) -> dict[str, int]:
    """`batch`: {"model", "version", "parts": [{"id", "inputs"}], "sent"}. A redelivered batch
    computes only the requests not yet answered."""
    started = time.time()
    model, version = batch["model"], int(batch["version"])
    queue_wait = max(0.0, started - batch["sent"]) if "sent" in batch else None
    if queue_wait is not None:
        QUEUE_WAIT.labels(model).observe(queue_wait)
    parts = batch["parts"]
    answered, cancelled = results_existing(backend, [p["id"] for p in parts])
    if redelivered or answered - cancelled:
        REDELIVERIES.labels(model).inc()
    if cancelled:
        _cancelled_skip(model, version, [p for p in parts if p["id"] in cancelled])
    todo = [p for p in parts if p["id"] not in answered]
    if not todo:
        return {"parts": len(parts), "computed": 0}
    runtime = runtime_get()
    missing = tensors_fetch(runtime.tensor_client, todo, runtime.shm)
    results = [(request_id, _TENSORS_MISSING[why]) for request_id, why in missing.items()]
    live = [p for p in todo if p["id"] not in missing]
    run = runtime.batch_run(live, model_name=model, version=version) if live else None
    if run is not None:
        results += run.results
    results_store(backend, results)
    tensors_forget(runtime.tensor_client, todo)
    elapsed_ms = round((time.time() - started) * 1000, 3)
    for request_id, result in results:
        outcome = result["error"]["code"] if "error" in result else "ok"
        WORKER_REQUESTS.labels(model, str(version), outcome).inc()
        logger.info(
            "prediction",
            extra={
                "request_id": request_id,
                "model": model,
                "version": version,
                "status": outcome,
                "queue_wait_ms": None if queue_wait is None else round(queue_wait * 1000, 3),
                "inference_ms": elapsed_ms,
                "batch_requests": len(todo),
                "worker": runtime.worker_id,
            },
        )
    if run is not None:
        runtime.stats_record(model_name=model, version=version, run=run)
    return {"parts": len(parts), "computed": len(todo)}


def _cancelled_skip(model: str, version: int, parts: list[dict[str, Any]]) -> None:
    """Requests whose client went away before this batch ran: not computed, counted and logged
    (status "cancelled"), their offloaded tensors dropped."""
    runtime = runtime_get()
    for part in parts:
        WORKER_REQUESTS.labels(model, str(version), CANCELLED).inc()
        logger.info(
            "prediction",
            extra={
                "request_id": part["id"],
                "model": model,
                "version": version,
                "status": CANCELLED,
                "worker": runtime.worker_id,
            },
        )
    tensors_forget(runtime.tensor_client, parts)
