"""Peer (b): the classic Keras + Redis list serving loop, tuned: the web process pushes each
request onto a Redis list and polls its result key every POLL_MS (≤ 5 ms, not the original
tutorial's 250 ms); one model process pops up to 32 requests at a time and predicts them as one
batch.

    python -m bench.peers.redis_loop model <model.keras> <redis url>
    uvicorn bench.peers.redis_loop:app        (web; REDIS_URL in the environment)
"""

import asyncio
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import numpy as np
import orjson
import redis
import redis.asyncio as aioredis

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
    rows = np.asarray(orjson.loads(body)["inputs"], dtype=np.float32)
    request_id = uuid.uuid4().hex
    await _client.rpush(
        QUEUE, msgpack.packb({"id": request_id, "shape": list(rows.shape), "data": rows.tobytes()})
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


def model_loop(model_path: str, redis_url: str) -> None:
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    client = redis.Redis.from_url(redis_url)
    print("model loop ready", flush=True)
    while True:
        first = client.blpop([QUEUE], timeout=1)
        if first is None:
            continue
        items = [first[1], *(client.lpop(QUEUE, BATCH - 1) or [])]
        requests = [msgpack.unpackb(item) for item in items]
        arrays = [np.frombuffer(r["data"], dtype=np.float32).reshape(r["shape"]) for r in requests]
        scores = np.asarray(model.predict_on_batch(np.concatenate(arrays)))
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
