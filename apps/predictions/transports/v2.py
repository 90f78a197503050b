"""The Open Inference Protocol (KServe v2) over REST.

    POST /v2/models/{name}[/versions/{v}]/infer
      {"id"?, "inputs": [{"name", "shape", "datatype", "data"}], "outputs"?, "parameters"?}
      → {"model_name", "model_version", "id", "outputs": [...]}
      with the binary tensor data extension: `Inference-Header-Content-Length` bytes of JSON,
      then the tensors' raw little-endian bytes (BYTES: 4-byte length-prefixed elements)
    GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{v}][/ready]

Errors: {"error": "<message>"}.
"""

import math
from typing import Any, Literal

import numpy as np
import orjson
from django.http import HttpRequest, HttpResponse
from django.views import View

from apps.predictions import dataplane
from apps.predictions.errors import bad_request
from apps.predictions.fastpath import body_get
from apps.predictions.selectors import ServedModel
from apps.predictions.transports.http import (
    json_body,
    json_object,
    json_response,
    renders_errors,
    request_context,
)
from apps.predictions.types import Caller, InferenceRequest, InferenceResponse
from apps.predictions.validation import bytes_from_json, shape_check, tensor_check
from inference_common.wire import NUMPY_TO_V2, V2_TO_NUMPY, bytes_array

BINARY_HEADER = "Inference-Header-Content-Length"


def metadata_render(served: ServedModel, versions: list[int]) -> dict[str, Any]:
    def tensors(side: str) -> list[dict[str, Any]]:
        return [
            {"name": t["name"], "datatype": t["datatype"], "shape": t["shape"]}
            for t in served.signature[side]
        ]

    return {
        "name": served.name,
        "versions": [str(v) for v in versions],
        "platform": "tensorflow_keras" if served.platform == "keras" else served.platform,
        "inputs": tensors("inputs"),
        "outputs": tensors("outputs"),
    }


def binary_bytes(chunk: bytes | memoryview, shape: list[int], *, field: str) -> np.ndarray:
    """BYTES in the binary data extension: each element is a 4-byte little-endian length and
    that many bytes."""
    items, offset = [], 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise bad_request("BYTES element length is cut short", field=f"{field}.parameters")
        size = int.from_bytes(chunk[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(chunk):
            raise bad_request("BYTES element is longer than the data sent", field=f"{field}.parameters")
        items.append(bytes(chunk[offset : offset + size]))
        offset += size
    if len(items) != math.prod(shape):
        raise bad_request(
            f"{len(items)} BYTES elements sent, shape {shape} needs {math.prod(shape)}", field=f"{field}.data"
        )
    return bytes_array(items, shape)


def _binary_tensor(
    item: dict[str, Any], spec: dict[str, Any], chunk: bytes | memoryview, *, field: str
) -> np.ndarray:
    """A tensor sent with the binary data extension: raw little-endian bytes after the JSON, seen
    in place (a read-only array over the request body, not a copy)."""
    if spec["datatype"] == "BYTES":
        return shape_check(binary_bytes(chunk, item["shape"], field=field), spec=spec, field=f"{field}.data")
    dtype = np.dtype(V2_TO_NUMPY[spec["datatype"]]).newbyteorder("<")
    shape = item["shape"]
    if len(chunk) != math.prod(shape) * dtype.itemsize:
        raise bad_request(
            f"binary_data_size {len(chunk)} does not match shape {shape} of {spec['datatype']}",
            field=f"{field}.parameters",
        )
    return tensor_check(np.frombuffer(chunk, dtype=dtype).reshape(shape), spec=spec, field=f"{field}.data")


def _tensor(
    item: Any, *, index: int, specs: dict[str, dict[str, Any]], binary: "BinaryReader | None" = None
) -> tuple[str, np.ndarray]:
    field = f"inputs[{index}]"
    if not isinstance(item, dict):
        raise bad_request("each input must be an object with name, shape, datatype, data", field=field)
    name = item.get("name")
    if name not in specs:
        raise bad_request(f"unknown input {name!r}; the model takes {sorted(specs)}", field=f"{field}.name")
    spec = specs[name]
    field = f"inputs.{name}"
    datatype = item.get("datatype")
    if datatype != spec["datatype"]:
        raise bad_request(
            f"datatype {datatype!r} does not match the model's {spec['datatype']}", field=f"{field}.datatype"
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise bad_request("shape must be a list of non-negative integers", field=f"{field}.shape")
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if binary is None or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad_request(
                "binary_data_size needs the binary data extension body", field=f"{field}.parameters"
            )
        return name, _binary_tensor(item, spec, binary.take(size, field=field), field=field)
    data = item.get("data")
    if not isinstance(data, list):
        raise bad_request("data must be a list (flat or nested)", field=f"{field}.data")
    if spec["datatype"] == "BYTES":
        array = bytes_from_json(data, field=f"{field}.data")
        if array.size != math.prod(shape):
            raise bad_request(
                f"data has {array.size} elements but shape {shape} needs {math.prod(shape)}",
                field=f"{field}.data",
            )
        return name, shape_check(array.reshape(shape), spec=spec, field=f"{field}.data")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise bad_request("ragged or malformed data", field=f"{field}.data") from None
    if array.size != math.prod(shape):
        raise bad_request(
            f"data has {array.size} elements but shape {shape} needs {math.prod(shape)}",
            field=f"{field}.data",
        )
    return name, tensor_check(array.reshape(shape), spec=spec, field=f"{field}.data")


class BinaryReader:
    """The bytes after the JSON header, handed out in the order the inputs list them."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def take(self, size: int, *, field: str) -> memoryview:
        """The next `size` bytes, a view of the body (no copy)."""
        if self.offset + size > len(self.data):
            raise bad_request("binary data is shorter than the sizes declared", field=f"{field}.parameters")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk


def binary_split(raw: bytes, header_length: str) -> tuple[dict[str, Any], BinaryReader]:
    """Split a binary-extension body: `Inference-Header-Content-Length` bytes of JSON, then data."""
    if not header_length.isdigit() or int(header_length) > len(raw):
        raise bad_request(
            "Inference-Header-Content-Length must be the JSON header's size",
            field="Inference-Header-Content-Length",
        )
    size = int(header_length)
    try:
        header = orjson.loads(raw[:size])
    except orjson.JSONDecodeError:
        raise bad_request("the JSON header of the binary request is not valid JSON", field="body") from None
    if not isinstance(header, dict):
        raise bad_request("the JSON header must be an object", field="body")
    return header, BinaryReader(memoryview(raw)[size:])


def inputs_decode(
    body: dict[str, Any], served: ServedModel, binary: BinaryReader | None = None
) -> dict[str, np.ndarray]:
    """Inputs by name, checked against the served signature (with the outputs asked for)."""
    items = body.get("inputs")
    if not isinstance(items, list) or not items:
        raise bad_request("inputs must be a non-empty list of tensors", field="inputs")
    specs = {spec["name"]: spec for spec in served.signature["inputs"]}
    inputs = dict(_tensor(item, index=i, specs=specs, binary=binary) for i, item in enumerate(items))
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise bad_request(f"missing inputs {missing}", field="inputs")
    rows = {len(a) for a in inputs.values()}
    if len(rows) != 1:
        raise bad_request("all inputs must have the same batch size", field="inputs")
    requested = body.get("outputs")
    known = {spec["name"] for spec in served.signature["outputs"]}
    if requested is not None and (
        not isinstance(requested, list)
        or not all(isinstance(o, dict) and o.get("name") in known for o in requested)
    ):
        raise bad_request(
            f"outputs must be a list of {{'name'}} objects naming {sorted(known)}", field="outputs"
        )
    return inputs


def caller_prioritized(caller: Caller, body: dict[str, Any]) -> Caller:
    """The request's `parameters.priority`, when it has one, over the caller's X-Priority."""
    parameters = body.get("parameters")
    if not isinstance(parameters, dict) or parameters.get("priority") is None:
        return caller
    return dataplane.prioritized(caller, parameters["priority"], field="parameters.priority")


def outputs_wanted(body: dict[str, Any]) -> list[str] | None:
    """The output names the client asked for (None: all); checked by `inputs_decode`."""
    requested = body.get("outputs")
    return None if requested is None else [o["name"] for o in requested]


def binary_wanted(body: dict[str, Any]) -> set[str] | Literal[True]:
    """Outputs the client wants as binary: all (True), some names, or none."""
    if (body.get("parameters") or {}).get("binary_data_output") is True:
        return True
    requested = body.get("outputs") or []
    return {
        o["name"]
        for o in requested
        if isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data") is True
    }


def binary_response_render(
    response: InferenceResponse,
    *,
    request_id: Any,
    wanted: list[str] | None,
    binary: set[str] | Literal[True],
) -> tuple[bytes, int]:
    """(body, JSON header length): outputs chosen as binary travel as raw little-endian bytes."""
    header = response_render(response, request_id=request_id, wanted=wanted)
    chunks = []
    for output in header["outputs"]:
        if binary is True or output["name"] in binary:
            data = np.ascontiguousarray(
                output.pop("data"), dtype=np.dtype(V2_TO_NUMPY[output["datatype"]]).newbyteorder("<")
            )
            chunks.append(data.tobytes())
            output["parameters"] = {"binary_data_size": len(chunks[-1])}
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    return head + b"".join(chunks), len(head)


def response_render(
    response: InferenceResponse, *, request_id: Any, wanted: list[str] | None
) -> dict[str, Any]:
    outputs = [
        {
            "name": name,
            "shape": list(array.shape),
            "datatype": NUMPY_TO_V2[array.dtype.name],
            "data": array.reshape(-1),
        }
        for name, array in response.outputs.items()
        if wanted is None or name in wanted
    ]
    body: dict[str, Any] = {
        "model_name": response.model,
        "model_version": str(response.version),
        "outputs": outputs,
    }
    body["id"] = request_id if isinstance(request_id, str) and request_id else response.id
    return body


class ServerMetadataApi(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        return json_response({"name": "keras-inference-platform", "version": "1.0", "extensions": []})


class LiveApi(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        return json_response({"live": True})


class ReadyApi(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        ready, _ = await dataplane.server_ready()
        # The protocol: 200 means ready, a 4xx means not ready.
        return json_response({"ready": ready}, status=200 if ready else 400)


class ModelMetadataApi(View):
    @renders_errors("plain")
    async def get(self, request: HttpRequest, name: str, version: int | None = None) -> HttpResponse:
        await dataplane.authenticate(request_context(request))
        metadata = await dataplane.model_metadata(name, version)
        return json_response(metadata_render(metadata.served, metadata.versions))


class ModelReadyApi(View):
    @renders_errors("plain")
    async def get(self, request: HttpRequest, name: str, version: int | None = None) -> HttpResponse:
        await dataplane.authenticate(request_context(request))
        _, ready = await dataplane.model_ready(name, version)
        return json_response({"name": name, "ready": ready}, status=200 if ready else 400)


class InferApi(View):
    @renders_errors("plain")
    async def post(self, request: HttpRequest, name: str, version: int | None = None) -> HttpResponse:
        caller = await dataplane.authenticate(request_context(request))
        header_length = request.headers.get(BINARY_HEADER)
        binary: BinaryReader | None = None
        if header_length is None:
            body = json_object(json_body(request))
        else:
            body, binary = binary_split(body_get(request), header_length)
        caller = caller_prioritized(caller, body)
        inference = InferenceRequest(
            model=name, version=version, inputs=lambda served: inputs_decode(body, served, binary)
        )
        response = await dataplane.infer(inference, caller)
        wanted, binary_outputs = outputs_wanted(body), binary_wanted(body)
        if binary_outputs:
            content, head = binary_response_render(
                response, request_id=body.get("id"), wanted=wanted, binary=binary_outputs
            )
            return HttpResponse(
                content,
                content_type="application/octet-stream",
                headers={BINARY_HEADER: str(head), "X-Request-ID": response.id},
            )
        return json_response(
            response_render(response, request_id=body.get("id"), wanted=wanted),
            headers={"X-Request-ID": response.id},
        )
