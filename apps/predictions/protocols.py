"""Request and response shapes of the three faces of one predict.

- native:  POST /api/v1/predictions  {"model", "version"?, "inputs", "async"?}
- TF Serving REST: {"instances": [...]} (row) or {"inputs": ...} (columnar)
- Open Inference Protocol v2: {"inputs": [{"name", "shape", "datatype", "data"}], "outputs"?}

Pure functions from parsed JSON to numpy arrays and back; validation errors name the field.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from apps.predictions.errors import bad_request
from apps.predictions.selectors import ServedModel
from apps.predictions.services import PredictionResult
from apps.predictions.validation import bytes_from_json, shape_check, tensor_check, tensor_from_json
from inference_common.wire import NUMPY_TO_V2, V2_TO_NUMPY, bytes_array

# --- native -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NativeRequest:
    model: str
    version: int | None
    inputs: Any
    run_async: bool


def _version_field(value: Any, *, field: str) -> int | None:
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


def native_request_parse(body: dict[str, Any]) -> NativeRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required (a model name)", field="model")
    if "inputs" not in body:
        raise bad_request("inputs is required: a list of input rows", field="inputs")
    run_async = body.get("async", False)
    if not isinstance(run_async, bool):
        raise bad_request("async must be true or false", field="async")
    return NativeRequest(
        model, _version_field(body.get("version"), field="version"), body["inputs"], run_async
    )


def native_inputs(request: NativeRequest, served: ServedModel) -> dict[str, np.ndarray]:
    spec = served.input_spec()
    return {spec["name"]: tensor_from_json(request.inputs, spec=spec, field="inputs")}


def native_response(result: PredictionResult, served: ServedModel) -> dict[str, Any]:
    output_name = served.signature["outputs"][0]["name"]
    scores = result.outputs[output_name]
    body: dict[str, Any] = {
        "id": result.id,
        "model": result.model,
        "version": result.version,
        "predictions": scores,
    }
    class_names = served.signature.get("class_names")
    if class_names and scores.ndim == 2 and scores.shape[1] == len(class_names):
        body["labels"] = [class_names[i] for i in np.argmax(scores, axis=1)]
    return body


# --- TensorFlow Serving REST ------------------------------------------------------------------


def tfserving_inputs(body: dict[str, Any], served: ServedModel) -> tuple[dict[str, np.ndarray], bool]:
    """Inputs by name and whether the request used the row ("instances") format."""
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
            }, True
        if len(specs) != 1:
            raise bad_request(
                "this model has several inputs: send each instance as an object", field="instances"
            )
        return {specs[0]["name"]: tensor_from_json(instances, spec=specs[0], field="instances")}, True
    columns = body["inputs"]
    if isinstance(columns, dict):
        return {
            spec["name"]: tensor_from_json(
                columns.get(spec["name"]), spec=spec, field=f"inputs.{spec['name']}"
            )
            for spec in specs
        }, False
    if len(specs) != 1:
        raise bad_request("this model has several inputs: send 'inputs' as an object", field="inputs")
    return {specs[0]["name"]: tensor_from_json(columns, spec=specs[0], field="inputs")}, False


def tfserving_response(result: PredictionResult, *, row_format: bool) -> dict[str, Any]:
    outputs = result.outputs
    if len(outputs) == 1:
        (only,) = outputs.values()
        return {"predictions": only} if row_format else {"outputs": only}
    if row_format:
        rows = len(next(iter(outputs.values())))
        return {"predictions": [{name: array[i] for name, array in outputs.items()} for i in range(rows)]}
    return {"outputs": outputs}


# --- Open Inference Protocol (KServe v2) --------------------------------------------------------


def v2_metadata(served: ServedModel, versions: list[int]) -> dict[str, Any]:
    def tensors(side: str) -> list[dict[str, Any]]:
        return [
            {"name": t["name"], "datatype": t["datatype"], "shape": t["shape"]}
            for t in served.signature[side]
        ]

    return {
        "name": served.name,
        "versions": [str(v) for v in versions],
        "platform": f"{served.platform}_keras" if served.platform != "keras" else "tensorflow_keras",
        "inputs": tensors("inputs"),
        "outputs": tensors("outputs"),
    }


def _v2_binary_bytes(chunk: bytes, shape: list[int], *, field: str) -> np.ndarray:
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
        items.append(chunk[offset : offset + size])
        offset += size
    if len(items) != math.prod(shape):
        raise bad_request(
            f"{len(items)} BYTES elements sent, shape {shape} needs {math.prod(shape)}", field=f"{field}.data"
        )
    return bytes_array(items, shape)


def _v2_binary_tensor(item: dict[str, Any], spec: dict[str, Any], chunk: bytes, *, field: str) -> np.ndarray:
    """A tensor sent with the binary data extension: raw little-endian bytes after the JSON."""
    if spec["datatype"] == "BYTES":
        return shape_check(
            _v2_binary_bytes(chunk, item["shape"], field=field), spec=spec, field=f"{field}.data"
        )
    dtype = np.dtype(V2_TO_NUMPY[spec["datatype"]]).newbyteorder("<")
    shape = item["shape"]
    if len(chunk) != math.prod(shape) * dtype.itemsize:
        raise bad_request(
            f"binary_data_size {len(chunk)} does not match shape {shape} of {spec['datatype']}",
            field=f"{field}.parameters",
        )
    return tensor_check(np.frombuffer(chunk, dtype=dtype).reshape(shape), spec=spec, field=f"{field}.data")


def _v2_tensor(
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
        return name, _v2_binary_tensor(item, spec, binary.take(size, field=field), field=field)
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

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def take(self, size: int, *, field: str) -> bytes:
        if self.offset + size > len(self.data):
            raise bad_request("binary data is shorter than the sizes declared", field=f"{field}.parameters")
        chunk = self.data[self.offset : self.offset + size].tobytes()
        self.offset += size
        return chunk


def v2_split_binary(raw: bytes, header_length: str) -> tuple[dict[str, Any], BinaryReader]:
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
    return header, BinaryReader(raw[size:])


def v2_inputs(
    body: dict[str, Any], served: ServedModel, binary: BinaryReader | None = None
) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """Inputs by name, and the output names the client asked for (None: all)."""
    items = body.get("inputs")
    if not isinstance(items, list) or not items:
        raise bad_request("inputs must be a non-empty list of tensors", field="inputs")
    specs = {spec["name"]: spec for spec in served.signature["inputs"]}
    inputs = dict(_v2_tensor(item, index=i, specs=specs, binary=binary) for i, item in enumerate(items))
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise bad_request(f"missing inputs {missing}", field="inputs")
    rows = {len(a) for a in inputs.values()}
    if len(rows) != 1:
        raise bad_request("all inputs must have the same batch size", field="inputs")
    requested = body.get("outputs")
    if requested is None:
        return inputs, None
    known = {spec["name"] for spec in served.signature["outputs"]}
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and o.get("name") in known for o in requested
    ):
        raise bad_request(
            f"outputs must be a list of {{'name'}} objects naming {sorted(known)}", field="outputs"
        )
    return inputs, [o["name"] for o in requested]


def v2_binary_wanted(body: dict[str, Any]) -> set[str] | bool:
    """Outputs the client wants as binary: all (True), some names, or none."""
    if (body.get("parameters") or {}).get("binary_data_output") is True:
        return True
    requested = body.get("outputs") or []
    return {
        o["name"]
        for o in requested
        if isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data") is True
    }


def v2_binary_response(
    result: PredictionResult, *, request_id: Any, wanted: list[str] | None, binary: set[str] | bool
) -> tuple[bytes, int]:
    """(body, JSON header length): outputs chosen as binary travel as raw little-endian bytes."""
    header = v2_response(result, request_id=request_id, wanted=wanted)
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


def v2_response(result: PredictionResult, *, request_id: Any, wanted: list[str] | None) -> dict[str, Any]:
    outputs = [
        {
            "name": name,
            "shape": list(array.shape),
            "datatype": NUMPY_TO_V2[array.dtype.name],
            "data": array.reshape(-1),
        }
        for name, array in result.outputs.items()
        if wanted is None or name in wanted
    ]
    body: dict[str, Any] = {
        "model_name": result.model,
        "model_version": str(result.version),
        "outputs": outputs,
    }
    body["id"] = request_id if isinstance(request_id, str) and request_id else result.id
    return body
