"""Large tensors travel beside their task, not inside it.

Kombu's Redis transport wraps a message body in base64 inside a JSON envelope, and a prefork
worker's parent hands the message to its child through a pipe: for a batch of 600 KB images each
of those copies costs milliseconds of CPU in the API and the worker. A batch whose tensors add up
to more than INFERENCE_TENSOR_OFFLOAD_BYTES therefore stores each tensor's bytes under a Redis
key of its own (one pipeline, expiring with the task) and the task carries only the keys; the
worker fetches them with one MGET and deletes them once the answers are stored. Small batches
(the digits model's 256 bytes a row) stay inline: one round trip less.

Where they are stored: the broker's Redis keeps its AOF (and replicas) for the messages, and a
tensor written there is appended to disk too, ~1,100 core-µs per 602 KB image on this machine
(docs/architecture.md, "Tensors off the AOF"). With INFERENCE_TENSOR_REDIS_URL set, the tensors of
a batch of sync requests go to that Redis instead, one without persistence (`make run` starts one
on a unix socket, deploy/bin/redis-tensors): they live for seconds and their clients are waiting,
so losing them with that Redis fails those requests with a 503 and loses nothing accepted. A batch
holding an async job keeps its tensors on the broker's Redis, replicated and on disk like the
job's message. The wire tensor then says `"store": "volatile"` beside its key.

Where the API and the workers share a host, shared memory beats both (INFERENCE_TENSOR_SHM_BYTES,
inference_common/shm_tensors.py): a sync request's tensors go there first, and to a Redis only
when the API's region is full.
"""

from collections.abc import Callable, Iterator
from typing import Any

import redis

from inference_common.shm_tensors import ShmReader, ShmRegion

TENSOR_PREFIX = "inference:tensor:"
VOLATILE = "volatile"  # a wire tensor's "store" when its bytes sit in INFERENCE_TENSOR_REDIS_URL
# Why a part's tensors could not be had (the worker answers the part with that failure code).
EXPIRED = "expired"
UNREACHABLE = "tensors_unavailable"

# The client of a store: None for the broker's Redis, VOLATILE for the tensor Redis; None back
# when that store is not configured here.
ClientOf = Callable[[str | None], "redis.Redis | None"]


def batch_bytes(parts: list[dict[str, Any]]) -> int:
    return sum(len(wire.get("data", b"")) for part in parts for wire in part["inputs"].values())


def _offloadable(parts: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(request id, input name, wire tensor) of each tensor with bytes to move (BYTES tensors
    stay inline)."""
    for part in parts:
        for name, wire in part["inputs"].items():
            if "data" in wire:
                yield part["id"], name, wire


def tensors_offload(
    client: redis.Redis, parts: list[dict[str, Any]], *, ttl_s: int, store: str | None = None
) -> None:
    """Move each input's bytes to `inference:tensor:<request id>:<input>` in `client` (the
    `store` named so); the wire tensor keeps its dtype and shape and gets a `key` instead of
    `data`. The wire tensors change only once every value is stored: a failed write leaves them
    as they were, to be stored elsewhere."""
    pipe = client.pipeline(transaction=False)
    moved = []
    for request_id, name, wire in _offloadable(parts):
        key = f"{TENSOR_PREFIX}{request_id}:{name}"
        pipe.set(key, wire["data"], ex=ttl_s)
        moved.append((wire, key))
    pipe.execute()
    for wire, key in moved:
        wire["data"], wire["key"] = b"", key
        if store:
            wire["store"] = store


def tensors_to_shm(region: ShmRegion, parts: list[dict[str, Any]], *, ttl_s: float) -> bool:
    """Copy each input's bytes into `region` (inference_common/shm_tensors.py); the wire tensor
    gets its place (`shm`) instead of `data`. False, with nothing moved, when it has no room."""
    placed = []
    for request_id, _, wire in _offloadable(parts):
        place = region.put(request_id, wire["data"], ttl_s=ttl_s)
        if place is None:
            for part in parts:
                region.release(part["id"])
            return False
        placed.append((wire, place))
    for wire, place in placed:
        wire["data"], wire["shm"] = b"", place
    return True


def tensor_keys(parts: list[dict[str, Any]], store: str | None = None) -> list[str]:
    """The keys of the tensors of `parts` held in `store`."""
    return [
        wire["key"]
        for part in parts
        for wire in part["inputs"].values()
        if wire.get("key") and wire.get("store") == store
    ]


def _stores(parts: list[dict[str, Any]]) -> set[str | None]:
    return {wire.get("store") for part in parts for wire in part["inputs"].values() if wire.get("key")}


def tensors_fetch(
    client_of: ClientOf, parts: list[dict[str, Any]], shm: ShmReader | None = None
) -> dict[str, str]:
    """Put the stored bytes back into the wire tensors (one MGET per store, a copy out of shared
    memory). Returns {request id: EXPIRED or UNREACHABLE} for the parts whose tensors cannot be
    had: gone (expired: nobody waits for them any more), or in a tensor Redis that does not answer
    or a shared-memory region not on this host (their clients get a 503). The broker's Redis
    failing raises, as every other command on it does: the batch is redelivered."""
    values: dict[str, Any] = {}
    unreachable: set[str] = set()
    for store in _stores(parts):
        keys = tensor_keys(parts, store)
        client = client_of(store)
        try:
            if client is None:
                raise redis.ConnectionError(f"no Redis configured here for tensor store {store!r}")
            values.update(zip(keys, client.mget(keys), strict=True))
        except (redis.RedisError, OSError):
            if store is None:
                raise
            unreachable.update(keys)
    failed = {}
    for part in parts:
        for wire in part["inputs"].values():
            if "shm" in wire:
                value, why = _shm_read(shm, wire["shm"])
            elif wire.get("key") in unreachable:
                value, why = None, UNREACHABLE
            elif wire.get("key"):
                value, why = values[wire["key"]], EXPIRED
            else:
                continue  # inline
            if value is None:
                failed[part["id"]] = why
                break
            wire["data"] = value
    return failed


def _shm_read(shm: ShmReader | None, place: dict[str, Any]) -> tuple[bytes | None, str]:
    """A shared-memory slot's bytes, and why there are none: EXPIRED (reused), UNREACHABLE (the
    region is not on this host)."""
    try:
        if shm is None:
            raise FileNotFoundError("no shared-memory reader here")
        return shm.read(place), EXPIRED
    except (OSError, ValueError):
        return None, UNREACHABLE


def tensors_forget(client_of: ClientOf, parts: list[dict[str, Any]]) -> None:
    """Delete the tensors of `parts`; a tensor Redis that does not answer lets them expire."""
    for store in _stores(parts):
        client = client_of(store)
        if client is None:
            continue
        try:
            client.delete(*tensor_keys(parts, store))
        except (redis.RedisError, OSError):
            if store is None:
                raise
