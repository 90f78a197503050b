import numpy as np
import pytest

from apps.predictions import protocols
from apps.predictions.errors import ApiError
from apps.predictions.selectors import ServedModel
from apps.predictions.services import PredictionResult

SIGNATURE = {
    "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
    "class_names": ["a", "b", "c"],
}
SERVED = ServedModel(name="toy", version=2, signature=SIGNATURE)
ROWS = [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
SCORES = np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1]], dtype=np.float32)
RESULT = PredictionResult(id="abc", model="toy", version=2, outputs={"scores": SCORES})


def test_native_parse_and_response() -> None:
    request = protocols.native_request_parse({"model": "toy", "inputs": ROWS, "version": "2"})
    assert request.version == 2
    assert not request.run_async
    inputs = protocols.native_inputs(request, SERVED)
    np.testing.assert_array_equal(inputs["pixels"], np.array(ROWS, dtype=np.float32))
    body = protocols.native_response(RESULT, SERVED)
    assert body["labels"] == ["b", "a"]
    assert body["version"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": ROWS}, "model"),
        ({"model": "", "inputs": ROWS}, "model"),
        ({"model": "toy"}, "inputs"),
        ({"model": "toy", "inputs": ROWS, "version": 0}, "version"),
        ({"model": "toy", "inputs": ROWS, "version": "one"}, "version"),
        ({"model": "toy", "inputs": ROWS, "version": True}, "version"),
        ({"model": "toy", "inputs": ROWS, "async": "yes"}, "async"),
    ],
)
def test_native_parse_errors_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        protocols.native_request_parse(body)
    assert caught.value.field == field


def test_tfserving_row_and_columnar_formats() -> None:
    inputs, row = protocols.tfserving_inputs({"instances": ROWS}, SERVED)
    assert row
    assert inputs["pixels"].shape == (2, 4)
    inputs, row = protocols.tfserving_inputs({"instances": [{"pixels": r} for r in ROWS]}, SERVED)
    assert row
    assert inputs["pixels"].shape == (2, 4)
    inputs, row = protocols.tfserving_inputs({"inputs": {"pixels": ROWS}}, SERVED)
    assert not row
    assert inputs["pixels"].shape == (2, 4)
    assert protocols.tfserving_response(RESULT, row_format=True)["predictions"] is SCORES
    assert protocols.tfserving_response(RESULT, row_format=False)["outputs"] is SCORES


def test_tfserving_needs_exactly_one_format() -> None:
    with pytest.raises(ApiError, match="exactly one"):
        protocols.tfserving_inputs({"instances": ROWS, "inputs": ROWS}, SERVED)
    with pytest.raises(ApiError, match="exactly one"):
        protocols.tfserving_inputs({}, SERVED)


def test_v2_flat_and_nested_data() -> None:
    flat = {
        "inputs": [
            {"name": "pixels", "shape": [2, 4], "datatype": "FP32", "data": [v for row in ROWS for v in row]}
        ]
    }
    nested = {"inputs": [{"name": "pixels", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]}
    for body in (flat, nested):
        inputs, wanted = protocols.v2_inputs(body, SERVED)
        assert wanted is None
        np.testing.assert_array_equal(inputs["pixels"], np.array(ROWS, dtype=np.float32))
    response = protocols.v2_response(RESULT, request_id="req-1", wanted=None)
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
def test_v2_tensor_errors_name_the_field(tensor: dict, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        protocols.v2_inputs({"inputs": [tensor]}, SERVED)
    assert caught.value.field == field
    assert caught.value.plain_response().status_code == 400


def test_v2_requested_outputs_must_exist() -> None:
    body = {"inputs": [{"name": "pixels", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}
    _, wanted = protocols.v2_inputs({**body, "outputs": [{"name": "scores"}]}, SERVED)
    assert wanted == ["scores"]
    with pytest.raises(ApiError) as caught:
        protocols.v2_inputs({**body, "outputs": [{"name": "logits"}]}, SERVED)
    assert caught.value.field == "outputs"
