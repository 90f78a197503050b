"""BYTES inputs: TF Serving's {"b64": ...}, Open Inference Protocol strings and length-prefixed
binary elements, validated into object arrays of bytes and carried across the broker."""

import base64

import msgpack
import numpy as np
import pytest

from apps.predictions import protocols
from apps.predictions.errors import ApiError
from apps.predictions.selectors import ServedModel
from apps.predictions.services import request_fingerprint
from inference_common.tensor_store import batch_bytes
from inference_common.wire import tensor_decode, tensor_encode

SIGNATURE = {
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}],
    "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
}
SERVED = ServedModel(name="words", version=1, signature=SIGNATURE)
PNG = b"\x89PNG\r\n\x1a\n\x00\xff"


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def test_tf_serving_b64_and_text_in_row_and_columnar_formats() -> None:
    rows, row_format = protocols.tfserving_inputs({"instances": [[b64(PNG)], ["dog"]]}, SERVED)
    assert row_format and rows["text"].dtype == object and rows["text"].shape == (2, 1)
    assert rows["text"].tolist() == [[PNG], [b"dog"]]
    named, _ = protocols.tfserving_inputs({"instances": [{"text": [b64(b"cat")]}]}, SERVED)
    assert named["text"].tolist() == [[b"cat"]]
    columns, row_format = protocols.tfserving_inputs({"inputs": {"text": [["cat"], [b64(b"dog")]]}}, SERVED)
    assert not row_format and columns["text"].tolist() == [[b"cat"], [b"dog"]]


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([[{"b64": "not base64!"}]], "b64 is not valid base64"),
        ([[3.5]], "BYTES elements must be strings"),
        ([["a"], ["b", "c"]], "ragged"),
        ([["a", "b"]], "does not match the model's [-1, 1]"),
    ],
)
def test_bad_bytes_inputs_name_the_field(instances: list, message: str) -> None:
    with pytest.raises(ApiError) as error:
        protocols.tfserving_inputs({"instances": instances}, SERVED)
    assert error.value.status == 400 and error.value.field == "instances" and message in error.value.message


def test_v2_bytes_as_json_strings_and_as_binary_elements() -> None:
    body = {"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": ["cat", "dog"]}]}
    inputs, _ = protocols.v2_inputs(body, SERVED, None)
    assert inputs["text"].tolist() == [[b"cat"], [b"dog"]]
    elements = b"".join(len(e).to_bytes(4, "little") + e for e in (PNG, b"dog"))
    header = {
        "inputs": [
            {
                "name": "text",
                "shape": [2, 1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(elements)},
            }
        ]
    }
    inputs, _ = protocols.v2_inputs(header, SERVED, protocols.BinaryReader(elements))
    assert inputs["text"].tolist() == [[PNG], [b"dog"]]
    with pytest.raises(ApiError) as error:
        protocols.v2_inputs(header, SERVED, protocols.BinaryReader(elements[:-1]))
    assert error.value.field == "inputs.text.parameters"


def test_bytes_tensors_cross_the_broker_inline_and_fingerprint_by_content() -> None:
    array = protocols.tfserving_inputs({"instances": [[b64(PNG)], ["dog"]]}, SERVED)[0]["text"]
    wire = msgpack.unpackb(msgpack.packb(tensor_encode(array)))
    decoded = tensor_decode(wire)
    assert decoded.dtype == object and decoded.tolist() == array.tolist()
    assert batch_bytes([{"id": "r", "inputs": {"text": tensor_encode(array)}}]) == 0  # never offloaded
    same = protocols.tfserving_inputs({"instances": [[b64(PNG)], ["dog"]]}, SERVED)[0]
    other = protocols.tfserving_inputs({"instances": [[b64(PNG)], ["cat"]]}, SERVED)[0]
    assert request_fingerprint(SERVED, {"text": array}) == request_fingerprint(SERVED, same)
    assert request_fingerprint(SERVED, {"text": array}) != request_fingerprint(SERVED, other)
    assert np.array_equal(decoded, array)
