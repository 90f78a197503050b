"""Redis clients that fail fast: one quick retry, no backoff.

redis-py's default retry policy backs off for seconds when Redis is unreachable; the API must
answer 503 within a second instead, and the client's own retry (with `Retry-After`) is the
better place to wait.
"""

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

CONNECT_TIMEOUT_S = 0.5
READ_TIMEOUT_S = 2.0


def redis_sync(url: str | None = None) -> redis.Redis:
    return redis.Redis.from_url(
        url or settings.REDIS_URL,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=READ_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1),
    )


def redis_async(url: str | None = None) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url or settings.REDIS_URL,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=READ_TIMEOUT_S,
        retry=AsyncRetry(NoBackoff(), 1),
    )
