"""The platform's own REST protocol.

    POST /api/v1/predictions       {"model", "version"?, "inputs": [[...], ...], "async"?}
      → 200 {"id", "model", "version", "predictions", "labels"?}, or 202 {"id", "status_url"}
    GET  /api/v1/predictions/{id}  → {"id", "status", "model", "version", ...}
    DELETE /api/v1/predictions/{id}  cancel a pending async job → 200 {"id", "status": "cancelled"}

Errors: {"error": {"code", "message", "field"?}}.
"""

from typing import Any

import numpy as np
from django.http import HttpRequest, HttpResponse
from django.views import View

from apps.predictions import dataplane
from apps.predictions.errors import bad_request
from apps.predictions.selectors import ServedModel
from apps.predictions.transports.http import (
    json_body,
    json_object,
    json_response,
    renders_errors,
    request_context,
)
from apps.predictions.types import InferenceRequest, InferenceResponse
from apps.predictions.validation import tensor_from_json


def version_field(value: Any, *, field: str) -> int | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, str))
        or not str(value).isdigit()
        or int(value) < 1
    ):
        raise bad_request("version must be a positive integer", field=field)
    return int(value)


def request_parse(body: dict[str, Any]) -> tuple[InferenceRequest, bool]:
    """The request, and whether the client asked not to wait ("async": true)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required (a model name)", field="model")
    if "inputs" not in body:
        raise bad_request("inputs is required: a list of input rows", field="inputs")
    run_async = body.get("async", False)
    if not isinstance(run_async, bool):
        raise bad_request("async must be true or false", field="async")
    rows = body["inputs"]

    def inputs(served: ServedModel) -> dict[str, np.ndarray]:
        spec = served.input_spec()
        return {spec["name"]: tensor_from_json(rows, spec=spec, field="inputs")}

    version = version_field(body.get("version"), field="version")
    return InferenceRequest(model=model, version=version, inputs=inputs), run_async


def response_render(response: InferenceResponse) -> dict[str, Any]:
    signature = response.served.signature
    scores = response.outputs[signature["outputs"][0]["name"]]
    body: dict[str, Any] = {
        "id": response.id,
        "model": response.model,
        "version": response.version,
        "predictions": scores,
    }
    class_names = signature.get("class_names")
    if class_names and scores.ndim == 2 and scores.shape[1] == len(class_names):
        body["labels"] = [class_names[i] for i in np.argmax(scores, axis=1)]
    return body


class PredictionCreateApi(View):
    @renders_errors("native")
    async def post(self, request: HttpRequest) -> HttpResponse:
        caller = await dataplane.authenticate(request_context(request))
        inference, run_async = request_parse(json_object(json_body(request)))
        if run_async:
            job_id = await dataplane.enqueue(inference, caller)
            status_url = request.build_absolute_uri(f"/api/v1/predictions/{job_id}")
            return json_response({"id": job_id, "status": "pending", "status_url": status_url}, status=202)
        response = await dataplane.infer(inference, caller)
        return json_response(response_render(response), headers={"X-Request-ID": response.id})


class PredictionDetailApi(View):
    @renders_errors("native")
    async def get(self, request: HttpRequest, job_id: str) -> HttpResponse:
        caller = await dataplane.authenticate(request_context(request))
        job = await dataplane.job_get(job_id, caller)
        body: dict[str, object] = {
            "id": job.id,
            "status": job.status,
            "model": job.model,
            "version": job.version,
        }
        if job.error is not None:
            body["error"] = {"code": job.error.code, "message": job.error.message}
        elif job.response is not None:
            body.update(response_render(job.response))
        return json_response(body)

    @renders_errors("native")
    async def delete(self, request: HttpRequest, job_id: str) -> HttpResponse:
        """Cancel a pending job: 200 {"id", "status": "cancelled", ...}; 409 once answered."""
        caller = await dataplane.authenticate(request_context(request))
        job = await dataplane.job_cancel(job_id, caller)
        return json_response({"id": job.id, "status": job.status, "model": job.model, "version": job.version})
