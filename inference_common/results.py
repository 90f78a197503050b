"""The answer a worker stores for each request, and how the API reads it back.

A worker stores each request's answer exactly as Celery stores a task result (`celery-task-meta-<id>`,
status SUCCESS), so the API's waiter, async job lookups and idempotent retries treat it like any
task result. The result itself is one of two records:

- an answer: `{"model", "version", "worker", "outputs": {name: wire tensor}}`;
- a failure the worker could not avoid: `{"error": {"code", "message"}}`, where `code` is one of
  FAILURE_CODES;
- a cancellation, stored by the API under the request's id when its client went away or deleted
  the job before a worker answered (SET NX: never over an answer): a worker that finds it skips
  the request, in the lookup it already makes for answered ones (no extra round trip).
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from inference_common.wire import tensor_decode, tensor_encode

RESULT_PREFIX = "celery-task-meta-"

# What a worker answers instead of outputs. `not_found`: the version does not exist;
# `model_unavailable` / `load_failed`: it exists but could not be loaded here; `expired`: the
# request's tensors expired before a worker reached it; `tensors_unavailable`: they are in a
# tensor Redis that does not answer (inference_common/tensor_store.py); `predict_failed`: the
# version loaded but raised while computing the batch (every request of that batch gets it, at
# once, instead of waiting for its deadline).
FAILURE_CODES = (
    "not_found",
    "model_unavailable",
    "load_failed",
    "expired",
    "tensors_unavailable",
    "predict_failed",
)
CANCELLED = "cancelled"


def result_key(request_id: str) -> str:
    return RESULT_PREFIX + request_id


@dataclass(frozen=True)
class Answer:
    model: str
    version: int
    outputs: dict[str, np.ndarray]
    worker: str = ""


@dataclass(frozen=True)
class Failure:
    code: str
    message: str


def answer_encode(answer: Answer) -> dict[str, Any]:
    return {
        "model": answer.model,
        "version": answer.version,
        "worker": answer.worker,
        "outputs": {name: tensor_encode(array) for name, array in answer.outputs.items()},
    }


def failure_encode(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def task_meta(request_id: str, result: dict[str, Any], *, done: str | None = None) -> dict[str, Any]:
    """A request's record as Celery stores a task's result (`celery-task-meta-<id>`): what the
    worker stores for an answer and the API for a cancellation. `done`: ISO time, now if None."""
    return {
        "status": "SUCCESS",
        "result": result,
        "traceback": None,
        "children": [],
        "date_done": done or datetime.now(UTC).isoformat(),
        "task_id": request_id,
    }


def cancelled_encode() -> dict[str, Any]:
    return failure_encode(CANCELLED, "cancelled by its client before a worker computed it")


def is_cancelled(result: Any) -> bool:
    """Whether a stored result (a task meta's `result`) is a cancellation."""
    return isinstance(result, dict) and (result.get("error") or {}).get("code") == CANCELLED


def result_decode(result: dict[str, Any]) -> Answer | Failure:
    if "error" in result:
        return Failure(code=str(result["error"]["code"]), message=str(result["error"]["message"]))
    return Answer(
        model=str(result["model"]),
        version=int(result["version"]),
        outputs={name: tensor_decode(wire) for name, wire in result["outputs"].items()},
        worker=str(result.get("worker", "")),
    )
