import base64
from typing import Any

import pytest

from apps.predictions.errors import ApiError
from apps.predictions.transports import tfserving
from tests.unit.apps.predictions.transports.conftest import BYTES_SERVED, PNG, RESPONSE, ROWS, SCORES, SERVED


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def test_row_and_columnar_formats() -> None:
    for body in (
        {"instances": ROWS},
        {"instances": [{"pixels": r} for r in ROWS]},
        {"inputs": {"pixels": ROWS}},
    ):
        assert tfserving.inputs_decode(body, SERVED)["pixels"].shape == (2, 4)
    assert tfserving.response_render(RESPONSE, row_format=True)["predictions"] is SCORES
    assert tfserving.response_render(RESPONSE, row_format=False)["outputs"] is SCORES


def test_needs_exactly_one_format() -> None:
    with pytest.raises(ApiError, match="exactly one"):
        tfserving.inputs_decode({"instances": ROWS, "inputs": ROWS}, SERVED)
    with pytest.raises(ApiError, match="exactly one"):
        tfserving.inputs_decode({}, SERVED)


def test_b64_and_text_in_row_and_columnar_formats() -> None:
    rows = tfserving.inputs_decode({"instances": [[b64(PNG)], ["dog"]]}, BYTES_SERVED)
    assert rows["text"].dtype == object and rows["text"].shape == (2, 1)
    assert rows["text"].tolist() == [[PNG], [b"dog"]]
    named = tfserving.inputs_decode({"instances": [{"text": [b64(b"cat")]}]}, BYTES_SERVED)
    assert named["text"].tolist() == [[b"cat"]]
    columns = tfserving.inputs_decode({"inputs": {"text": [["cat"], [b64(b"dog")]]}}, BYTES_SERVED)
    assert columns["text"].tolist() == [[b"cat"], [b"dog"]]


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([[{"b64": "not base64!"}]], "b64 is not valid base64"),
        ([[3.5]], "BYTES elements must be strings"),
        ([["a"], ["b", "c"]], "ragged"),
        ([["a", "b"]], "does not match the model's [-1, 1]"),
    ],
)
def test_bad_bytes_inputs_name_the_field(instances: list[Any], message: str) -> None:
    with pytest.raises(ApiError) as error:
        tfserving.inputs_decode({"instances": instances}, BYTES_SERVED)
    assert error.value.status == 400 and error.value.field == "instances" and message in error.value.message
