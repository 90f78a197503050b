"""Which worker serves which model version, as marks in Redis.

Each worker child that has a version loaded refreshes a mark (a sorted-set member scored with the
time) every `INFERENCE_HEARTBEAT_S`; the API counts marks younger than `INFERENCE_HEARTBEAT_TTL_S`.
A dead child's mark simply ages out, so readiness needs no clean shutdown to stay truthful.
"""

import time

import redis
import redis.asyncio as aioredis
from django.conf import settings


def serving_key(*, environment: str, model: str, version: int) -> str:
    return f"inference:serving:{environment}:{model}:{version}"


def serving_mark(client: redis.Redis, *, environment: str, model: str, version: int, worker_id: str) -> None:
    key = serving_key(environment=environment, model=model, version=version)
    now = time.time()
    pipe = client.pipeline()
    pipe.zadd(key, {worker_id: now})
    pipe.zremrangebyscore(key, 0, now - settings.INFERENCE_HEARTBEAT_TTL_S)
    pipe.expire(key, int(settings.INFERENCE_HEARTBEAT_TTL_S * 3))
    pipe.execute()


def serving_unmark(
    client: redis.Redis, *, environment: str, model: str, version: int, worker_id: str
) -> None:
    client.zrem(serving_key(environment=environment, model=model, version=version), worker_id)


async def serving_count(client: aioredis.Redis, *, environment: str, model: str, version: int) -> int:
    key = serving_key(environment=environment, model=model, version=version)
    return int(await client.zcount(key, time.time() - settings.INFERENCE_HEARTBEAT_TTL_S, "+inf"))


def serving_workers_sync(client: redis.Redis, *, environment: str, model: str, version: int) -> set[str]:
    """The workers with a fresh mark for this version."""
    key = serving_key(environment=environment, model=model, version=version)
    found = client.zrangebyscore(key, time.time() - settings.INFERENCE_HEARTBEAT_TTL_S, "+inf")
    return {m.decode() if isinstance(m, bytes) else str(m) for m in found}
