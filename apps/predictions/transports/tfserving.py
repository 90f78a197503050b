"""TensorFlow Serving's REST API.

    POST /v1/models/{name}[/versions/{v}]:predict
      {"instances": [...]} (row format) → {"predictions": ...}
      {"inputs": ...} (columnar format)  → {"outputs": ...}
    GET  /v1/models/{name}[/versions/{v}] → {"model_version_status": [...]}

BYTES elements travel as {"b64": "..."} or text. Errors: {"error": "<message>"}.
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


def inputs_decode(body: dict[str, Any], served: ServedModel) -> dict[str, np.ndarray]:
    """Inputs by name from either format, checked against the served signature."""
    if ("instances" in body) == ("inputs" in body):
        raise bad_request(
            "send exactly one of 'instances' (row format) or 'inputs' (columnar format)", field="instances"
        )
    specs = served.signature["inputs"]
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise bad_request("instances must be a non-empty list", field="instances")
        if all(isinstance(row, dict) and set(row) != {"b64"} for row in instances):
            return {
                spec["name"]: tensor_from_json(
                    [row.get(spec["name"]) for row in instances], spec=spec, field=f"instances.{spec['name']}"
                )
                for spec in specs
            }
        if len(specs) != 1:
            raise bad_request(
                "this model has several inputs: send each instance as an object", field="instances"
            )
        return {specs[0]["name"]: tensor_from_json(instances, spec=specs[0], field="instances")}
    columns = body["inputs"]
    if isinstance(columns, dict):
        return {
            spec["name"]: tensor_from_json(
                columns.get(spec["name"]), spec=spec, field=f"inputs.{spec['name']}"
            )
            for spec in specs
        }
    if len(specs) != 1:
        raise bad_request("this model has several inputs: send 'inputs' as an object", field="inputs")
    return {specs[0]["name"]: tensor_from_json(columns, spec=specs[0], field="inputs")}


def response_render(response: InferenceResponse, *, row_format: bool) -> dict[str, Any]:
    outputs = response.outputs
    if len(outputs) == 1:
        (only,) = outputs.values()
        return {"predictions": only} if row_format else {"outputs": only}
    if row_format:
        rows = len(next(iter(outputs.values())))
        return {"predictions": [{name: array[i] for name, array in outputs.items()} for i in range(rows)]}
    return {"outputs": outputs}


class PredictApi(View):
    @renders_errors("plain")
    async def post(self, request: HttpRequest, name: str, version: int | None = None) -> HttpResponse:
        caller = await dataplane.authenticate(request_context(request))
        body = json_object(json_body(request))
        inference = InferenceRequest(
            model=name, version=version, inputs=lambda served: inputs_decode(body, served)
        )
        response = await dataplane.infer(inference, caller)
        return json_response(
            response_render(response, row_format="instances" in body), headers={"X-Request-ID": response.id}
        )


class StatusApi(View):
    @renders_errors("plain")
    async def get(self, request: HttpRequest, name: str, version: int | None = None) -> HttpResponse:
        await dataplane.authenticate(request_context(request))
        served, ready = await dataplane.model_ready(name, version)
        return json_response(
            {
                "model_version_status": [
                    {
                        "version": str(served.version),
                        "state": "AVAILABLE" if ready else "LOADING",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                ]
            }
        )
