"""The data plane's steps in order, without a running platform: authenticate, then authorize,
route, check the inputs against the routed version, and hand over to the services (stood in for
here: their enqueue/await path runs against real workers in tests/integration)."""

import asyncio
from typing import Any

import numpy as np
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from apps.predictions import dataplane, selectors
from apps.predictions.authentication import api_key_create
from apps.predictions.errors import ApiError
from apps.predictions.selectors import Route, ServedModel
from apps.predictions.types import Caller, InferenceRequest, InferenceResponse, RequestContext

SIGNATURE = {
    "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 2]}],
}


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch, settings: Any) -> list[dict[str, Any]]:
    """`toy` v3 deployed (v1 pinned-reachable too); prediction_run records what reached it."""
    settings.INFERENCE_REGISTRY_CACHE_S = 60.0
    settings.INFERENCE_SYNC_TIMEOUT_S = 30.0

    def load(name: str, version: int | None) -> Route | None:
        if name != "toy" or version not in (None, 1, 3):
            return None
        return Route(ServedModel(name="toy", version=version or 3, signature=SIGNATURE))

    monkeypatch.setattr(selectors, "_route_load", load)
    selectors._cache.clear()
    reached: list[dict[str, Any]] = []

    async def run(*, served: ServedModel, inputs: dict[str, np.ndarray], caller: Caller) -> InferenceResponse:
        reached.append({"served": served, "inputs": inputs, "caller": caller})
        return InferenceResponse(id="r1", served=served, outputs={"scores": inputs["pixels"]})

    monkeypatch.setattr(dataplane, "prediction_run", run)
    return reached


def rows_request(rows: Any, *, model: str = "toy", version: int | None = None) -> InferenceRequest:
    def inputs(served: ServedModel) -> dict[str, np.ndarray]:
        from apps.predictions.validation import tensor_from_json

        return {"pixels": tensor_from_json(rows, spec=served.input_spec(), field="inputs")}

    return InferenceRequest(model=model, version=version, inputs=inputs)


def infer(request: InferenceRequest, context: RequestContext) -> InferenceResponse:
    """What an adapter does: authenticate, then infer."""

    async def both() -> InferenceResponse:
        return await dataplane.infer(request, await dataplane.authenticate(context))

    return asyncio.run(both())


def refusal(request: InferenceRequest, context: RequestContext) -> ApiError:
    with pytest.raises(ApiError) as caught:
        infer(request, context)
    return caught.value


@pytest.mark.django_db(transaction=True)
def test_a_request_crosses_every_step_once(routed: list[dict[str, Any]]) -> None:
    key, raw = api_key_create(name="client", models=["toy"])
    context = RequestContext(authorization=f"Bearer {raw}", timeout_s=90.0, idempotency_key="k-1")
    response = infer(rows_request([[1, 2]]), context)
    assert (response.id, response.model, response.version) == ("r1", "toy", 3)
    (call,) = routed
    assert call["inputs"]["pixels"].dtype == np.float32
    assert call["caller"].owner == str(key.pk)
    assert call["caller"].deadline_s == 30.0  # the client's 90 s capped at the server's limit
    assert call["caller"].idempotency_key == "k-1"
    assert infer(rows_request([[1, 2]], version=1), context).version == 1  # pinned


@pytest.mark.django_db(transaction=True)
def test_refusals_come_in_order_and_nothing_is_enqueued(routed: list[dict[str, Any]]) -> None:
    _, raw = api_key_create(name="client", models=["toy"])
    good = RequestContext(authorization=f"Bearer {raw}")
    bad_rows = rows_request([[1, 2, 3]])
    assert refusal(bad_rows, RequestContext()).status == 401  # before anything else
    assert refusal(bad_rows, RequestContext(authorization="Bearer nope")).status == 401
    forbidden = refusal(rows_request([[1, 2]], model="other"), good)
    assert (forbidden.status, forbidden.field) == (403, "model")
    _, any_model = api_key_create(name="wide")
    unknown = refusal(
        rows_request([[1, 2]], model="other"), RequestContext(authorization=f"Bearer {any_model}")
    )
    assert (unknown.status, unknown.field) == (404, "model")
    assert refusal(rows_request([[1, 2]], version=2), good).field == "version"
    invalid = refusal(bad_rows, good)
    assert (invalid.status, invalid.field) == (400, "inputs")
    reused = refusal(
        rows_request([[1, 2]]), RequestContext(authorization=f"Bearer {raw}", idempotency_key="")
    )
    assert (reused.status, reused.field) == (400, "Idempotency-Key")
    assert routed == []


@pytest.mark.django_db(transaction=True)
def test_a_priority_is_read_checked_against_the_key_and_carried(routed: list[dict[str, Any]]) -> None:
    _, plain = api_key_create(name="plain")
    _, trusted = api_key_create(name="trusted", high_priority=True)
    request = rows_request([[1, 2]])
    infer(request, RequestContext(authorization=f"Bearer {plain}"))
    infer(request, RequestContext(authorization=f"Bearer {plain}", priority="low"))
    infer(request, RequestContext(authorization=f"Bearer {plain}", priority="2"))  # Triton's numbering
    infer(request, RequestContext(authorization=f"Bearer {trusted}", priority="HIGH"))
    assert [call["caller"].priority for call in routed] == ["normal", "low", "normal", "high"]
    denied = refusal(request, RequestContext(authorization=f"Bearer {plain}", priority="1"))
    assert (denied.status, denied.code, denied.field) == (403, "forbidden", "X-Priority")
    unknown = refusal(request, RequestContext(authorization=f"Bearer {trusted}", priority="urgent"))
    assert (unknown.status, unknown.field) == (400, "X-Priority") and "high, normal, low" in unknown.message
    # The Open Inference Protocol's parameter, as the adapters pass it, with its own field name.
    caller = asyncio.run(dataplane.authenticate(RequestContext(authorization=f"Bearer {plain}")))
    assert dataplane.prioritized(caller, 3, field="parameters.priority").priority == "low"
    for bad in (True, 7, -1, 2.5, None):
        with pytest.raises(ApiError) as caught:
            dataplane.prioritized(caller, bad, field="parameters.priority")
        assert (caught.value.status, caught.value.field) == (400, "parameters.priority")
    assert len(routed) == 4


def test_an_unreachable_redis_is_one_503(
    routed: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.INFERENCE_AUTH_REQUIRED = False

    async def down(**_: Any) -> InferenceResponse:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(dataplane, "prediction_run", down)
    error = refusal(rows_request([[1, 2]]), RequestContext())
    assert (error.status, error.code, error.headers) == (503, "unavailable", {"Retry-After": "1"})


def test_job_of_another_key_is_not_found(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.INFERENCE_AUTH_REQUIRED = False

    async def job_get(*, job_id: str, owner: str) -> tuple[dict[str, Any], None]:
        assert owner == "anonymous"
        raise ApiError(404, "not_found", f"no prediction job {job_id!r}", field="id")

    monkeypatch.setattr(dataplane, "prediction_job_get", job_get)
    with pytest.raises(ApiError) as caught:
        asyncio.run(dataplane.job_get("abc", Caller(key=None, deadline_s=30.0)))
    assert caught.value.status == 404
