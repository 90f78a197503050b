"""HTTP faces of the platform. Async views, thin: parse, authenticate, call a service, render."""

import functools
from pathlib import Path

import yaml
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views import View

from apps.models_registry import selectors as registry
from apps.predictions import protocols
from apps.predictions.authentication import api_key_authenticate
from apps.predictions.errors import ApiError
from apps.predictions.fastpath import db_fresh
from apps.predictions.health import platform_gauges, platform_readiness
from apps.predictions.http import (
    api_errors,
    idempotency_key,
    json_body,
    json_object,
    json_response,
    raw_body,
    request_timeout,
)
from apps.predictions.models import ApiKey
from apps.predictions.observability import request_identified, request_served
from apps.predictions.selectors import ServedModel, served_model_get, served_model_ready
from apps.predictions.services import Caller, prediction_enqueue, prediction_run, prediction_status
from inference_project.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from inference_project.metrics import OneShot, metrics_text


def _version_numbers(name: str) -> list[int]:
    db_fresh()
    return [v.number for v in registry.model_version_list(model_name=name)]


def _owner(key: ApiKey | None) -> str:
    return str(key.pk) if key else "anonymous"


def _caller(request: HttpRequest, key: ApiKey | None) -> Caller:
    return Caller(
        owner=_owner(key),
        rate=key.rate if key else settings.INFERENCE_THROTTLE_PER_SECOND,
        deadline_s=request_timeout(request),
        idempotency_key=idempotency_key(request),
    )


async def _served(*, name: str, version: int | None = None) -> ServedModel:
    served = await served_model_get(name=name, version=version)
    request_served(model=served.name, version=served.version)
    return served


def _scope(key: ApiKey | None, model: str) -> None:
    if key is not None and not key.allows(model):
        raise ApiError(403, "forbidden", f"this API key may not call model {model!r}", field="model")


# --- health -----------------------------------------------------------------------------------


class LivenessApi(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        return json_response({"status": "ok"})


class ReadinessApi(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        ready, details = await platform_readiness()
        return json_response({"ready": ready, **details}, status=200 if ready else 503)


class MetricsApi(View):
    """Prometheus exposition: this API's (or, in multiprocess mode, all its processes')
    request metrics, plus queue depths and serving workers read from Redis now."""

    async def get(self, request: HttpRequest) -> HttpResponse:
        text = metrics_text(OneShot(await platform_gauges()))
        return HttpResponse(text, content_type=METRICS_CONTENT_TYPE)


class SchemaApi(View):
    """The OpenAPI description of these routes (apps/predictions/openapi.yaml), as JSON."""

    async def get(self, request: HttpRequest) -> HttpResponse:
        return json_response(openapi_schema())


@functools.cache
def openapi_schema() -> dict[str, object]:
    return yaml.safe_load((Path(__file__).parent / "openapi.yaml").read_text())


# --- native -----------------------------------------------------------------------------------


class PredictionCreateApi(View):
    @api_errors("native")
    async def post(self, request: HttpRequest) -> HttpResponse:
        key = await api_key_authenticate(request)
        payload = protocols.native_request_parse(json_object(json_body(request)))
        _scope(key, payload.model)
        served = await _served(name=payload.model, version=payload.version)
        inputs = protocols.native_inputs(payload, served)
        if payload.run_async:
            job_id = await prediction_enqueue(served=served, inputs=inputs, caller=_caller(request, key))
            status_url = request.build_absolute_uri(f"/api/v1/predictions/{job_id}")
            return json_response({"id": job_id, "status": "pending", "status_url": status_url}, status=202)
        result = await prediction_run(served=served, inputs=inputs, caller=_caller(request, key))
        return json_response(protocols.native_response(result, served), headers={"X-Request-ID": result.id})


class PredictionDetailApi(View):
    @api_errors("native")
    async def get(self, request: HttpRequest, job_id: str) -> HttpResponse:
        key = await api_key_authenticate(request)
        request_identified(job_id)
        status, outcome, job = await prediction_status(job_id=job_id, owner=_owner(key))
        body: dict[str, object] = {
            "id": job_id,
            "status": status,
            "model": job["model"],
            "version": job["version"],
        }
        if isinstance(outcome, ApiError):
            body["error"] = {"code": outcome.code, "message": outcome.message}
        elif outcome is not None:
            served = await _served(name=job["model"], version=job["version"])
            body.update(protocols.native_response(outcome, served))
        return json_response(body)


# --- TensorFlow Serving REST ------------------------------------------------------------------


class TfServingPredictApi(View):
    @api_errors("plain")
    async def post(self, request: HttpRequest, name: str, version: int | None = None) -> HttpResponse:
        key = await api_key_authenticate(request)
        _scope(key, name)
        served = await _served(name=name, version=version)
        inputs, row_format = protocols.tfserving_inputs(json_object(json_body(request)), served)
        result = await prediction_run(served=served, inputs=inputs, caller=_caller(request, key))
        return json_response(
            protocols.tfserving_response(result, row_format=row_format), headers={"X-Request-ID": result.id}
        )


class TfServingStatusApi(View):
    @api_errors("plain")
    async def get(self, request: HttpRequest, name: str, version: int | None = None) -> HttpResponse:
        await api_key_authenticate(request)
        served = await _served(name=name, version=version)
        state = "AVAILABLE" if await served_model_ready(served) else "LOADING"
        return json_response(
            {
                "model_version_status": [
                    {
                        "version": str(served.version),
                        "state": state,
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                ]
            }
        )


# --- Open Inference Protocol (KServe v2) --------------------------------------------------------


class V2ServerMetadataApi(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        return json_response({"name": "keras-inference-platform", "version": "1.0", "extensions": []})


class V2LiveApi(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        return json_response({"live": True})


class V2ReadyApi(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        ready, _ = await platform_readiness()
        # The protocol: 200 means ready, a 4xx means not ready.
        return json_response({"ready": ready}, status=200 if ready else 400)


class V2ModelMetadataApi(View):
    @api_errors("plain")
    async def get(self, request: HttpRequest, name: str, version: int | None = None) -> HttpResponse:
        await api_key_authenticate(request)
        served = await _served(name=name, version=version)
        versions = [served.version] if version else await sync_to_async(_version_numbers)(name)
        return json_response(protocols.v2_metadata(served, versions))


class V2ModelReadyApi(View):
    @api_errors("plain")
    async def get(self, request: HttpRequest, name: str, version: int | None = None) -> HttpResponse:
        await api_key_authenticate(request)
        served = await _served(name=name, version=version)
        ready = await served_model_ready(served)
        return json_response({"name": name, "ready": ready}, status=200 if ready else 400)


BINARY_HEADER = "Inference-Header-Content-Length"


class V2InferApi(View):
    @api_errors("plain")
    async def post(self, request: HttpRequest, name: str, version: int | None = None) -> HttpResponse:
        key = await api_key_authenticate(request)
        _scope(key, name)
        served = await _served(name=name, version=version)
        header_length = request.headers.get(BINARY_HEADER)
        if header_length is None:
            body, binary = json_object(json_body(request)), None
        else:
            body, binary = protocols.v2_split_binary(raw_body(request), header_length)
        inputs, wanted = protocols.v2_inputs(body, served, binary)
        result = await prediction_run(served=served, inputs=inputs, caller=_caller(request, key))
        binary_outputs = protocols.v2_binary_wanted(body)
        if binary_outputs:
            content, head = protocols.v2_binary_response(
                result, request_id=body.get("id"), wanted=wanted, binary=binary_outputs
            )
            return HttpResponse(
                content,
                content_type="application/octet-stream",
                headers={BINARY_HEADER: str(head), "X-Request-ID": result.id},
            )
        return json_response(
            protocols.v2_response(result, request_id=body.get("id"), wanted=wanted),
            headers={"X-Request-ID": result.id},
        )
