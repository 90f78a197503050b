"""Large tensors beside the task: stored by the API, fetched and deleted by the worker, in the
broker's Redis or in a tensor Redis of their own."""

from typing import Any

import numpy as np
import pytest
import redis

from inference_common.tensor_store import (
    EXPIRED,
    UNREACHABLE,
    VOLATILE,
    ClientOf,
    batch_bytes,
    tensor_keys,
    tensors_fetch,
    tensors_forget,
    tensors_offload,
)
from inference_common.wire import tensor_decode, tensor_encode
from inference_project.redis_clients import redis_sync
from tests.conftest import free_port


def parts_of(*arrays: np.ndarray) -> list[dict[str, Any]]:
    return [{"id": f"req-{i}", "inputs": {"images": tensor_encode(a)}} for i, a in enumerate(arrays)]


def stores(broker: redis.Redis, volatile: redis.Redis | None = None) -> ClientOf:
    return lambda store: broker if store is None else volatile


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
    assert tensors_fetch(stores(client), parts) == {}
    for part, image in zip(parts, images, strict=True):
        np.testing.assert_array_equal(tensor_decode(part["inputs"]["images"]), image)
    tensors_forget(stores(client), parts)
    assert client.exists(*keys) == 0


def test_a_part_whose_tensors_expired_is_reported_not_guessed(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    parts = parts_of(np.ones((1, 4), np.float32), np.zeros((1, 4), np.float32))
    tensors_offload(client, parts, ttl_s=60)
    client.delete(parts[1]["inputs"]["images"]["key"])
    assert tensors_fetch(stores(client), parts) == {"req-1": EXPIRED}
    np.testing.assert_array_equal(tensor_decode(parts[0]["inputs"]["images"]), np.ones((1, 4)))


def test_inline_tensors_are_left_alone(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    parts = parts_of(np.ones((1, 4), np.float32))
    assert tensors_fetch(stores(client), parts) == {} and tensor_keys(parts) == []
    tensors_forget(stores(client), parts)


def test_volatile_tensors_live_in_their_own_redis_and_name_it(redis_server: str) -> None:
    broker = redis.Redis.from_url(redis_server)
    volatile = redis.Redis.from_url(redis_server.replace("/0", "/1"))  # another database stands in
    parts = parts_of(np.ones((1, 4), np.float32))
    parts[0]["id"] = "req-volatile"
    tensors_offload(volatile, parts, ttl_s=60, store=VOLATILE)
    wire = parts[0]["inputs"]["images"]
    assert wire["store"] == VOLATILE and volatile.exists(wire["key"]) and not broker.exists(wire["key"])
    assert tensor_keys(parts) == [] and tensor_keys(parts, VOLATILE) == [wire["key"]]
    assert tensors_fetch(stores(broker, volatile), parts) == {}
    np.testing.assert_array_equal(tensor_decode(wire), np.ones((1, 4)))
    tensors_forget(stores(broker, volatile), parts)
    assert not volatile.exists(wire["key"])


def test_a_tensor_redis_that_is_down_fails_its_parts_only(redis_server: str) -> None:
    broker = redis.Redis.from_url(redis_server)
    down = redis_sync(f"redis://127.0.0.1:{free_port()}/0")
    kept, lost = parts_of(np.ones((1, 4), np.float32)), parts_of(np.zeros((1, 4), np.float32))
    lost[0]["id"] = "req-lost"
    tensors_offload(broker, kept, ttl_s=60)
    tensors_offload(broker, lost, ttl_s=60, store=VOLATILE)  # then its Redis goes away
    both = kept + lost
    assert tensors_fetch(stores(broker, down), both) == {"req-lost": UNREACHABLE}
    assert tensors_fetch(stores(broker, None), both) == {"req-lost": UNREACHABLE}  # none configured
    np.testing.assert_array_equal(tensor_decode(kept[0]["inputs"]["images"]), np.ones((1, 4)))
    tensors_forget(stores(broker, down), both)  # they expire there; the broker's are deleted
    assert not broker.exists(*tensor_keys(kept))


def test_a_failed_store_leaves_the_tensors_inline(redis_server: str) -> None:
    parts = parts_of(np.ones((1, 4), np.float32))
    with pytest.raises(redis.ConnectionError):
        tensors_offload(redis_sync(f"redis://127.0.0.1:{free_port()}/0"), parts, ttl_s=60, store=VOLATILE)
    wire = parts[0]["inputs"]["images"]
    assert "key" not in wire and "store" not in wire
    np.testing.assert_array_equal(tensor_decode(wire), np.ones((1, 4)))
