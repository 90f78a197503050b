from typing import Any

import numpy as np
import pytest

from apps.predictions.errors import ApiError
from apps.predictions.transports import native
from tests.unit.apps.predictions.transports.conftest import RESPONSE, ROWS, SERVED


def test_parse_and_render() -> None:
    request, run_async = native.request_parse({"model": "toy", "inputs": ROWS, "version": "2"})
    assert (request.model, request.version, run_async) == ("toy", 2, False)
    np.testing.assert_array_equal(request.inputs(SERVED)["pixels"], np.array(ROWS, dtype=np.float32))
    body = native.response_render(RESPONSE)
    assert body["labels"] == ["b", "a"]
    assert body["version"] == 2
    assert body["id"] == "abc"


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
def test_parse_errors_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiError) as caught:
        native.request_parse(body)
    assert caught.value.field == field


def test_inputs_are_checked_only_against_the_served_signature() -> None:
    """The envelope parses without knowing the model; the rows fail once the version is known."""
    request, _ = native.request_parse({"model": "toy", "inputs": [[1.0, 2.0]]})
    with pytest.raises(ApiError) as caught:
        request.inputs(SERVED)
    assert caught.value.field == "inputs"
    assert "does not match the model's [-1, 4]" in caught.value.message
