"""prediction_response: how a worker's stored answer becomes the API's response or error."""

from typing import Any

import numpy as np
import pytest

from apps.predictions.errors import ApiError
from apps.predictions.selectors import ServedModel
from apps.predictions.services import prediction_response
from inference_common.results import Answer, answer_encode, failure_encode

SERVED = ServedModel(name="digits", version=2, signature={})


def stored(result: dict[str, Any]) -> dict[str, Any]:
    return {"status": "SUCCESS", "result": result}


def refusal(meta: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as raised:
        prediction_response(task_id="r1", served=SERVED, meta=meta)
    return raised.value


def test_a_model_that_failed_at_predict_is_a_500_that_says_so() -> None:
    message = "digits v2 failed at predict: RuntimeError: no kernel"
    error = refusal(stored(failure_encode("predict_failed", message)))
    assert (error.status, error.code, error.message) == (500, "predict_failed", message)
    assert "Retry-After" not in error.headers  # retrying the same version will not help


@pytest.mark.parametrize(
    ("code", "status"),
    [("not_found", 404), ("load_failed", 503), ("model_unavailable", 503), ("expired", 503)],
)
def test_the_other_failures_keep_their_mapping(code: str, status: int) -> None:
    error = refusal(stored(failure_encode(code, "why")))
    assert (error.status, error.code) == (status, code)
    assert ("Retry-After" in error.headers) == (status == 503)


def test_an_answer_and_a_failed_task() -> None:
    answer = Answer(model="digits", version=2, outputs={"scores": np.eye(2, dtype=np.float32)})
    response = prediction_response(task_id="r1", served=SERVED, meta=stored(answer_encode(answer)))
    np.testing.assert_array_equal(response.outputs["scores"], np.eye(2, dtype=np.float32))
    assert refusal({"status": "FAILURE", "result": "boom"}).code == "inference_failed"
    assert refusal({"status": "REVOKED"}).status == 504
