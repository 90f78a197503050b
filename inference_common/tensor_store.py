"""Large tensors travel beside their task, not inside it.

Kombu's Redis transport wraps a message body in base64 inside a JSON envelope, and a prefork
worker's parent hands the message to its child through a pipe: for a batch of 600 KB images each
of those copies costs milliseconds of CPU in the API and the worker. A batch whose tensors add up
to more than INFERENCE_TENSOR_OFFLOAD_BYTES therefore stores each tensor's bytes under a Redis
key of its own (one pipeline, expiring with the task) and the task carries only the keys; the
worker fetches them with one MGET and deletes them once the answers are stored. Small batches
(the digits model's 256 bytes a row) stay inline: one round trip less.
"""

from typing import Any

import redis

TENSOR_PREFIX = "inference:tensor:"


def batch_bytes(parts: list[dict[str, Any]]) -> int:
    return sum(len(wire.get("data", b"")) for part in parts for wire in part["inputs"].values())


def tensors_offload(client: redis.Redis, parts: list[dict[str, Any]], *, ttl_s: int) -> None:
    """Move each input's bytes to `inference:tensor:<request id>:<input>`; the wire tensor keeps
    its dtype and shape and gets a `key` instead of `data`."""
    pipe = client.pipeline(transaction=False)
    for part in parts:
        for name, wire in part["inputs"].items():
            if "data" not in wire:  # BYTES tensors stay inline
                continue
            key = f"{TENSOR_PREFIX}{part['id']}:{name}"
            pipe.set(key, wire["data"], ex=ttl_s)
            wire["data"], wire["key"] = b"", key
    pipe.execute()


def tensor_keys(parts: list[dict[str, Any]]) -> list[str]:
    return [wire["key"] for part in parts for wire in part["inputs"].values() if wire.get("key")]


def tensors_fetch(client: redis.Redis, parts: list[dict[str, Any]]) -> list[str]:
    """Put the stored bytes back into the wire tensors; returns the ids of parts whose tensors
    are gone (expired: nobody waits for them any more)."""
    keys = tensor_keys(parts)
    if not keys:
        return []
    values = dict(zip(keys, client.mget(keys), strict=True))
    missing = []
    for part in parts:
        for wire in part["inputs"].values():
            if wire.get("key"):
                value = values[wire["key"]]
                if value is None:
                    missing.append(part["id"])
                    break
                wire["data"] = value
    return missing


def tensors_forget(client: redis.Redis, parts: list[dict[str, Any]]) -> None:
    if keys := tensor_keys(parts):
        client.delete(*keys)
