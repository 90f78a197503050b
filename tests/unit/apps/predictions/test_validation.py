import numpy as np
import pytest
from pytest_django import Settings

from apps.predictions.errors import ApiError
from apps.predictions.validation import tensor_from_json

SPEC = {"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}


def test_valid_rows_become_float32() -> None:
    array = tensor_from_json([[1] * 64, [2.5] * 64], spec=SPEC, field="inputs")
    assert array.dtype == np.float32
    assert array.shape == (2, 64)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([[1.0] * 63], "shape [1, 63]"),
        ([1.0] * 64, "shape [64]"),
        ([[["a"] * 64]], "non-numeric"),
        ([["x"] * 64], "non-numeric"),
        ([[True] * 64], "booleans"),
        ([[1.0] * 64, [1.0] * 10], "ragged"),
        ([], "empty"),
        ([[]], "empty"),
        ([[float("nan")] * 64], "NaN"),
        ([[float("inf")] * 64], "NaN, Inf"),
        ([[1e39] * 64], "FP32 range"),
        ([[{"a": 1}] * 64], "non-numeric"),
        ("1,2,3", "expected a list"),
        ({"pixels": [1]}, "expected a list"),
        ([[None] * 64], "non-numeric"),
    ],
)
def test_bad_tensors_are_rejected_naming_the_field(value: object, fragment: str) -> None:
    with pytest.raises(ApiError) as caught:
        tensor_from_json(value, spec=SPEC, field="inputs")
    assert caught.value.status == 400
    assert caught.value.field == "inputs"
    assert fragment in caught.value.message


def test_batch_limit(settings: Settings) -> None:
    settings.INFERENCE_MAX_BATCH_ROWS = 4
    with pytest.raises(ApiError, match="exceed the limit of 4"):
        tensor_from_json([[0.0] * 64] * 5, spec=SPEC, field="inputs")


def test_integer_datatypes_reject_floats_and_overflow() -> None:
    spec = {"name": "ids", "datatype": "INT8", "shape": [-1, 2]}
    assert tensor_from_json([[1, -2]], spec=spec, field="ids").dtype == np.int8
    with pytest.raises(ApiError, match="integers within the INT8 range"):
        tensor_from_json([[1.5, 2]], spec=spec, field="ids")
    with pytest.raises(ApiError, match="integers within the INT8 range"):
        tensor_from_json([[1000, 2]], spec=spec, field="ids")
