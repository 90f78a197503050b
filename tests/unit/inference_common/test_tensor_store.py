"""Large tensors beside the task: stored by the API, fetched and deleted by the worker."""

from typing import Any

import numpy as np
import pytest
import redis

from inference_common.tensor_store import (
    batch_bytes,
    tensor_keys,
    tensors_fetch,
    tensors_forget,
    tensors_offload,
)
from inference_common.wire import tensor_decode, tensor_encode
from inference_project.redis_clients import redis_sync


def parts_of(*arrays: np.ndarray) -> list[dict[str, Any]]:
    return [{"id": f"req-{i}", "inputs": {"images": tensor_encode(a)}} for i, a in enumerate(arrays)]


@pytest.mark.parametrize("large_values", [False, True], ids=["hiredis-packer", "large-values-packer"])
def test_offloaded_tensors_come_back_intact_and_are_deleted_after_use(
    redis_server: str, large_values: bool
) -> None:
    # The API stores with the large-values client (no copy of each value into one buffer).
    client = redis_sync(redis_server, large_values=large_values)
    images = [np.random.default_rng(i).random((2, 112, 112, 3), dtype=np.float32) for i in range(3)]
    parts = parts_of(*images)
    assert batch_bytes(parts) == 3 * images[0].nbytes
    tensors_offload(client, parts, ttl_s=60)
    keys = tensor_keys(parts)
    assert len(keys) == 3 and all(client.ttl(k) > 0 for k in keys)
    assert all(wire["data"] == b"" for part in parts for wire in part["inputs"].values())
    assert tensors_fetch(client, parts) == []
    for part, image in zip(parts, images, strict=True):
        np.testing.assert_array_equal(tensor_decode(part["inputs"]["images"]), image)
    tensors_forget(client, parts)
    assert client.exists(*keys) == 0


def test_a_part_whose_tensors_expired_is_reported_not_guessed(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    parts = parts_of(np.ones((1, 4), np.float32), np.zeros((1, 4), np.float32))
    tensors_offload(client, parts, ttl_s=60)
    client.delete(parts[1]["inputs"]["images"]["key"])
    assert tensors_fetch(client, parts) == ["req-1"]
    np.testing.assert_array_equal(tensor_decode(parts[0]["inputs"]["images"]), np.ones((1, 4)))


def test_inline_tensors_are_left_alone(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    parts = parts_of(np.ones((1, 4), np.float32))
    assert tensors_fetch(client, parts) == [] and tensor_keys(parts) == []
    tensors_forget(client, parts)
