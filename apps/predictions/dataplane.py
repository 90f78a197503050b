"""The data plane: what every protocol's adapter calls, one function per operation.

    caller = authenticate(context)      the API key and the terms of the request
    infer(request, caller)
      authorize (the key's models) → route (live or pinned version)
      → inputs checked against that version's signature → admit (rate, queue bound)
      → idempotency → batch → enqueue → await → InferenceResponse

An adapter authenticates first, before it parses the request, so an unauthenticated client
learns nothing about a request's form (401 before any 400).

Every failure leaves as the one error type, `ApiError` (an unreachable Redis included: 503 with
Retry-After); the adapters render it in their protocol's form. Nothing here knows a protocol's
JSON. Canary routing and shadow mirroring plug in at the route step; a priority level (the caller's,
`prioritized`) picks the batcher and the broker list the request waits in.
"""

import dataclasses
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import numpy as np
from asgiref.sync import sync_to_async
from django.conf import settings
from redis.exceptions import RedisError

from apps.models_registry import selectors as registry
from apps.predictions.authentication import api_key_authenticate
from apps.predictions.errors import ApiError, bad_request, unavailable
from apps.predictions.fastpath import db_fresh
from apps.predictions.health import platform_readiness
from apps.predictions.observability import request_identified, request_served
from apps.predictions.selectors import Route, ServedModel, route_get, served_model_get, served_model_ready
from apps.predictions.services import (
    prediction_enqueue,
    prediction_job_cancel,
    prediction_job_get,
    prediction_response,
    prediction_run,
)
from apps.predictions.shadow import shadow_mirror, shadow_mirror_job
from apps.predictions.types import Caller, InferenceRequest, InferenceResponse, RequestContext
from inference_common.priority import HIGH, level_parse
from inference_common.results import CANCELLED
from inference_project.errors import DATABASE_UNAVAILABLE, DATABASE_UNAVAILABLE_MESSAGE

P = ParamSpec("P")
T = TypeVar("T")


def _one_error_type(operation: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Redis (or the socket under it), or the registry database, failing anywhere in an operation
    is a 503, not a crash."""

    @functools.wraps(operation)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await operation(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise unavailable("Redis is unreachable; retry shortly") from exc
        except DATABASE_UNAVAILABLE as exc:
            raise unavailable(DATABASE_UNAVAILABLE_MESSAGE) from exc

    return wrapper


IDEMPOTENCY_KEY_MAX = 255
IDEMPOTENCY_FIELD = "Idempotency-Key"
ROUTING_KEY_FIELD = "X-Routing-Key"
PRIORITY_FIELD = "X-Priority"


def _header_token(value: str | None, *, field: str) -> str | None:
    if value is not None and not (
        0 < len(value) <= IDEMPOTENCY_KEY_MAX and value.isprintable() and value.isascii()
    ):
        raise bad_request(f"must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters", field=field)
    return value


@_one_error_type
async def authenticate(context: RequestContext) -> Caller:
    """Who asks (401 for a missing or unknown key) and on what terms: the deadline (the
    client's, capped at INFERENCE_SYNC_TIMEOUT_S) and a well-formed idempotency key."""
    key = await api_key_authenticate(context.authorization)
    idempotency_key = _header_token(context.idempotency_key, field=IDEMPOTENCY_FIELD)
    routing_key = _header_token(context.routing_key, field=ROUTING_KEY_FIELD)
    limit = settings.INFERENCE_SYNC_TIMEOUT_S
    deadline = limit if context.timeout_s is None else min(context.timeout_s, limit)
    caller = Caller(key=key, deadline_s=deadline, idempotency_key=idempotency_key, routing_key=routing_key)
    if context.priority is None:
        return caller
    return prioritized(caller, context.priority, field=PRIORITY_FIELD)


def prioritized(caller: Caller, value: object, *, field: str) -> Caller:
    """The caller at the priority level `value` names (inference_common/priority.py): 400 naming
    `field` for a value that names none, 403 for `high` from a key that may not use it."""
    try:
        level = level_parse(value)
    except ValueError as exc:
        raise bad_request(str(exc), field=field) from None
    if level == HIGH and not caller.may_use_high_priority:
        raise ApiError(403, "forbidden", "this API key may not send priority 'high' requests", field=field)
    return dataclasses.replace(caller, priority=level)


def _authorize(caller: Caller, model: str) -> None:
    if not caller.allows(model):
        raise ApiError(403, "forbidden", f"this API key may not call model {model!r}", field="model")


async def _served(name: str, version: int | None, routing_key: str | None = None) -> ServedModel:
    served = await served_model_get(name=name, version=version, routing_key=routing_key)
    request_served(model=served.name, version=served.version)
    return served


async def _prepared(
    request: InferenceRequest, caller: Caller
) -> tuple[Route, ServedModel, dict[str, np.ndarray]]:
    """Authorize, route, and check the inputs against the routed version."""
    _authorize(caller, request.model)
    route = await route_get(name=request.model, version=request.version)
    served = route.pick(caller.sticky_key)
    request_served(model=served.name, version=served.version)
    return route, served, request.inputs(served)


@_one_error_type
async def infer(request: InferenceRequest, caller: Caller) -> InferenceResponse:
    """Run one request and wait for its answer, up to the caller's deadline (504 after it).
    During a shadow rollout, a copy then goes to the candidate (apps/predictions/shadow.py)."""
    route, served, inputs = await _prepared(request, caller)
    response = await prediction_run(served=served, inputs=inputs, caller=caller)
    shadow_mirror(route=route, response=response, inputs=inputs)
    return response


@_one_error_type
async def enqueue(request: InferenceRequest, caller: Caller) -> str:
    """Accept one request without waiting: its job id, to look up with `job_get`. During a
    shadow rollout, a copy goes to the candidate once the live version answered the job."""
    route, served, inputs = await _prepared(request, caller)
    job_id = await prediction_enqueue(served=served, inputs=inputs, caller=caller)
    shadow_mirror_job(route=route, served=served, job_id=job_id, inputs=inputs)
    return job_id


@dataclass(frozen=True)
class Job:
    id: str
    status: str  # pending | done | failed | cancelled
    model: str
    version: int
    response: InferenceResponse | None = None
    error: ApiError | None = None


@_one_error_type
async def job_get(job_id: str, caller: Caller) -> Job:
    """An async job of the caller's key: pending, done with its response, or failed with its
    error; 404 for an unknown job or another key's."""
    request_identified(job_id)
    record, meta = await prediction_job_get(job_id=job_id, owner=caller.owner)
    job = Job(id=job_id, status="pending", model=record["model"], version=int(record["version"]))
    if meta is None:
        return job
    served = await _served(job.model, job.version)
    try:
        response = prediction_response(task_id=job_id, served=served, meta=meta)
    except ApiError as error:
        status = "cancelled" if error.code == CANCELLED else "failed"
        return Job(id=job_id, status=status, model=job.model, version=job.version, error=error)
    return Job(id=job_id, status="done", model=job.model, version=job.version, response=response)


@_one_error_type
async def job_cancel(job_id: str, caller: Caller) -> Job:
    """Cancel a pending async job of the caller's key: no worker computes it once this returns
    (one that already took it stores its answer only if the cancellation came after); 404 for an
    unknown job or another key's, 409 when it has an answer already."""
    request_identified(job_id)
    record = await prediction_job_cancel(job_id=job_id, owner=caller.owner)
    return Job(id=job_id, status="cancelled", model=record["model"], version=int(record["version"]))


def _version_numbers(name: str) -> list[int]:
    db_fresh()
    return [v.number for v in registry.model_version_list(model_name=name)]


@dataclass(frozen=True)
class ModelMetadata:
    served: ServedModel
    versions: list[int]


@_one_error_type
async def model_metadata(name: str, version: int | None) -> ModelMetadata:
    """The version a request for `name` (or `name` at `version`) would reach, and the model's
    registered versions (only that one when pinned)."""
    served = await _served(name, version)
    versions = [served.version] if version else await sync_to_async(_version_numbers)(name)
    return ModelMetadata(served=served, versions=versions)


@_one_error_type
async def model_ready(name: str, version: int | None) -> tuple[ServedModel, bool]:
    """The version a request would reach, and whether a worker has it loaded now."""
    served = await _served(name, version)
    return served, await served_model_ready(served)


async def server_ready() -> tuple[bool, dict[str, object]]:
    """Redis answers and every deployed model has a worker that can serve it (details say what
    is missing)."""
    return await platform_readiness()
