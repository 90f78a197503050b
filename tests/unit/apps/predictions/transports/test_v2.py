from typing import Any

import numpy as np
import orjson
import pytest

from apps.predictions.errors import ApiError
from apps.predictions.transports import v2
from apps.predictions.transports.http import plain_error
from tests.unit.apps.predictions.transports.conftest import BYTES_SERVED, PNG, RESPONSE, ROWS, SCORES, SERVED


def test_flat_and_nested_data() -> None:
    flat = {
        "inputs": [
            {"name": "pixels", "shape": [2, 4], "datatype": "FP32", "data": [v for row in ROWS for v in row]}
        ]
    }
    nested = {"inputs": [{"name": "pixels", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]}
    for body in (flat, nested):
        inputs = v2.inputs_decode(body, SERVED)
        assert v2.outputs_wanted(body) is None
        np.testing.assert_array_equal(inputs["pixels"], np.array(ROWS, dtype=np.float32))
    response = v2.response_render(RESPONSE, request_id="req-1", wanted=None)
    assert response["id"] == "req-1"
    assert response["model_version"] == "2"
    (output,) = response["outputs"]
    assert output["shape"] == [2, 3]
    assert output["datatype"] == "FP32"
    assert output["data"].tolist() == SCORES.reshape(-1).tolist()


@pytest.mark.parametrize(
    ("tensor", "field"),
    [
        ({"name": "nope", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}, "inputs[0].name"),
        ({"name": "pixels", "shape": [1, 4], "datatype": "INT32", "data": [0] * 4}, "inputs.pixels.datatype"),
        ({"name": "pixels", "shape": [1, 5], "datatype": "FP32", "data": [0] * 4}, "inputs.pixels.data"),
        ({"name": "pixels", "shape": [1, 5], "datatype": "FP32", "data": [0] * 5}, "inputs.pixels.data"),
        ({"name": "pixels", "shape": "1,4", "datatype": "FP32", "data": [0] * 4}, "inputs.pixels.shape"),
        ({"name": "pixels", "shape": [1, 4], "datatype": "FP32", "data": "0000"}, "inputs.pixels.data"),
    ],
)
def test_tensor_errors_name_the_field(tensor: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiError) as caught:
        v2.inputs_decode({"inputs": [tensor]}, SERVED)
    assert caught.value.field == field
    rendered = plain_error(caught.value)
    assert rendered.status_code == 400
    assert orjson.loads(rendered.content)["error"].startswith(field)


def test_requested_outputs_must_exist() -> None:
    body = {"inputs": [{"name": "pixels", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}
    v2.inputs_decode({**body, "outputs": [{"name": "scores"}]}, SERVED)
    assert v2.outputs_wanted({**body, "outputs": [{"name": "scores"}]}) == ["scores"]
    with pytest.raises(ApiError) as caught:
        v2.inputs_decode({**body, "outputs": [{"name": "logits"}]}, SERVED)
    assert caught.value.field == "outputs"


def test_binary_extension_in_and_out() -> None:
    data = np.array(ROWS, dtype="<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    body, binary = v2.binary_split(header + data, str(len(header)))
    np.testing.assert_array_equal(
        v2.inputs_decode(body, SERVED, binary)["pixels"], np.array(ROWS, dtype=np.float32)
    )
    content, head = v2.binary_response_render(
        RESPONSE, request_id=None, wanted=None, binary=v2.binary_wanted(body)
    )
    (output,) = orjson.loads(content[:head])["outputs"]
    assert output["parameters"]["binary_data_size"] == SCORES.nbytes
    assert np.frombuffer(content[head:], dtype="<f4").tolist() == SCORES.reshape(-1).tolist()
    with pytest.raises(ApiError) as caught:
        v2.binary_split(header + data, "x")
    assert caught.value.field == "Inference-Header-Content-Length"


def test_bytes_as_json_strings_and_as_binary_elements() -> None:
    body = {"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": ["cat", "dog"]}]}
    assert v2.inputs_decode(body, BYTES_SERVED)["text"].tolist() == [[b"cat"], [b"dog"]]
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
    assert v2.inputs_decode(header, BYTES_SERVED, v2.BinaryReader(elements))["text"].tolist() == [
        [PNG],
        [b"dog"],
    ]
    with pytest.raises(ApiError) as error:
        v2.inputs_decode(header, BYTES_SERVED, v2.BinaryReader(elements[:-1]))
    assert error.value.field == "inputs.text.parameters"
