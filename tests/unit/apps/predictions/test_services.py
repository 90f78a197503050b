"""prediction_response: how a worker's stored answer becomes the API's response or error."""

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY
from pytest_django import Settings

from apps.predictions import services
from apps.predictions.errors import ApiError
from apps.predictions.selectors import ServedModel
from apps.predictions.services import prediction_response
from inference_common.results import Answer, answer_encode, failure_encode
from inference_common.tensor_store import VOLATILE, tensor_keys
from inference_common.wire import tensor_encode
from tests.conftest import free_port

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
    [
        ("not_found", 404),
        ("load_failed", 503),
        ("model_unavailable", 503),
        ("expired", 503),
        ("tensors_unavailable", 503),
    ],
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


@pytest.fixture
def tensor_clients() -> Iterator[None]:
    services._tensor_redis.cache_clear()
    services._shm.clear()
    yield
    services._tensor_redis.cache_clear()
    if region := services._shm.pop("region", None):
        region.close()


def large_parts() -> list[dict[str, Any]]:
    return [{"id": "r9", "inputs": {"images": tensor_encode(np.ones((1, 64, 64, 3), np.float32))}}]


@pytest.mark.usefixtures("tensor_clients")
def test_sync_tensors_go_to_the_tensor_redis_async_ones_to_the_broker(
    settings: Settings, redis_server: str
) -> None:
    settings.REDIS_URL = redis_server
    settings.INFERENCE_TENSOR_REDIS_URL = volatile_url = redis_server.replace("/0", "/2")
    sync, job = large_parts(), large_parts()
    services._tensors_offload(sync, expires=30.0)
    services._tensors_offload(job, expires=None)  # an async job: durable, beside its message
    assert redis.Redis.from_url(volatile_url).ttl(tensor_keys(sync, VOLATILE)[0]) == 90
    assert tensor_keys(job) and redis.Redis.from_url(redis_server).exists(*tensor_keys(job))


@pytest.mark.usefixtures("tensor_clients")
def test_a_tensor_redis_that_is_down_sends_the_tensors_to_the_broker(
    settings: Settings, redis_server: str
) -> None:
    settings.REDIS_URL = redis_server
    settings.INFERENCE_TENSOR_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"

    def fallbacks() -> float:
        return REGISTRY.get_sample_value("inference_tensor_store_fallbacks_total") or 0.0

    before = fallbacks()
    parts = large_parts()
    services._tensors_offload(parts, expires=30.0)
    assert tensor_keys(parts, VOLATILE) == [] and redis.Redis.from_url(redis_server).exists(
        *tensor_keys(parts)
    )
    assert fallbacks() == before + 1


@pytest.mark.usefixtures("tensor_clients")
def test_sync_tensors_go_to_shared_memory_first_and_are_freed_when_the_request_ends(
    settings: Settings, redis_server: str
) -> None:
    settings.REDIS_URL = redis_server
    settings.INFERENCE_TENSOR_SHM_BYTES = 2**20
    settings.INFERENCE_TENSOR_REDIS_URL = ""
    services._tensors_release("r9")  # a request ending before any offload makes no region
    assert "region" not in services._shm
    sync, job = large_parts(), large_parts()
    services._tensors_offload(sync, expires=30.0)
    services._tensors_offload(job, expires=None)
    region = services._shm["region"]
    assert region is not None and "shm" in sync[0]["inputs"]["images"] and region.used() > 49152
    assert "shm" not in job[0]["inputs"]["images"] and tensor_keys(job)  # async: on the broker
    services._tensors_release("r9")
    assert region.used() == 0
    too_big = [{"id": "r10", "inputs": {"images": tensor_encode(np.ones((2, 512, 512), np.float32))}}]
    services._tensors_offload(too_big, expires=30.0)  # 2 MB: past the region, to the broker
    assert tensor_keys(too_big) and region.used() == 0
