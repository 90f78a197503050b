"""Peer (b): the classic Keras + Redis list serving loop, tuned: the web process pushes each
request onto a Redis list and polls its result key every POLL_MS (≤ 5 ms, not the original
tutorial's 250 ms); one model process pops up to 32 requests at a time and predicts them as one
batch.

    python -m bench.peers.redis_loop model <model.keras | model.simulated> <redis url>
    uvicorn bench.peers.redis_loop:app        (web; REDIS_URL in the environment)

The web process takes `{"inputs": [...]}` (FP32), or the tensor's raw bytes with
`Content-Type: application/octet-stream`, `X-Shape: 1,224,224,3` and `X-Datatype: FP32 | UINT8`.
Given a `model.simulated` (workers/simulated.py's file), the model process sleeps per batch as
the platform's simulated accelerator does and answers `first value + arange(10)` per row.
"""

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import orjson
import redis
import redis.asyncio as aioredis

DTYPES = {"FP32": np.float32, "UINT8": np.uint8}
QUEUE = "redis-loop:requests"
RESULT = "redis-loop:result:"
BATCH = 32
POLL_S = float(os.environ.get("POLL_MS", "2")) / 1000

_client: aioredis.Redis | None = None


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    global _client
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if _client is None:
        _client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    if headers.get(b"content-type") == b"application/octet-stream":
        shape = [int(d) for d in headers[b"x-shape"].split(b",")]
        dtype = DTYPES[headers.get(b"x-datatype", b"FP32").decode()]
        rows = np.frombuffer(body, dtype=dtype).reshape(shape)
    else:
        rows = np.asarray(orjson.loads(body)["inputs"], dtype=np.float32)
    request_id = uuid.uuid4().hex
    await _client.rpush(
        QUEUE,
        msgpack.packb(
            {"id": request_id, "shape": list(rows.shape), "dtype": rows.dtype.str, "data": rows.tobytes()}
        ),
    )
    while (result := await _client.get(RESULT + request_id)) is None:
        await asyncio.sleep(POLL_S)
    await _client.delete(RESULT + request_id)
    answer = msgpack.unpackb(result)
    scores = np.frombuffer(answer["data"], dtype=np.float32).reshape(answer["shape"])
    payload = orjson.dumps({"predictions": scores}, option=orjson.OPT_SERIALIZE_NUMPY)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": payload})


def _simulated(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """workers/simulated.py's kernel: sleep per batch, answer from each row's first value."""
    params = json.loads(Path(path).read_text())
    batch_s, row_s = params.get("batch_ms", 20.0) / 1000, params.get("row_ms", 0.05) / 1000

    def predict(x: np.ndarray) -> np.ndarray:
        time.sleep(batch_s + row_s * len(x))
        first = x.reshape(len(x), -1)[:, 0].astype(np.float32)
        return first[:, None] + np.arange(10, dtype=np.float32)

    return predict


def model_loop(model_path: str, redis_url: str) -> None:
    if model_path.endswith(".simulated"):
        predict = _simulated(model_path)
    else:
        import keras

        model = keras.saving.load_model(model_path, compile=False)

        def predict(x: np.ndarray) -> np.ndarray:
            return np.asarray(model.predict_on_batch(x))

    client = redis.Redis.from_url(redis_url)
    print("model loop ready", flush=True)
    while True:
        first = client.blpop([QUEUE], timeout=1)
        if first is None:
            continue
        items = [first[1], *(client.lpop(QUEUE, BATCH - 1) or [])]
        requests = [msgpack.unpackb(item) for item in items]
        arrays = [
            np.frombuffer(r["data"], dtype=np.dtype(r.get("dtype", "<f4"))).reshape(r["shape"])
            for r in requests
        ]
        scores = predict(np.concatenate(arrays))
        pipe = client.pipeline(transaction=False)
        start = 0
        for request, array in zip(requests, arrays, strict=True):
            part = scores[start : start + len(array)]
            start += len(array)
            pipe.set(
                RESULT + request["id"],
                msgpack.packb({"shape": list(part.shape), "data": part.tobytes()}),
                ex=60,
            )
        pipe.execute()


if __name__ == "__main__" and sys.argv[1] == "model":
    model_loop(sys.argv[2], sys.argv[3])
