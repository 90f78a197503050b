"""Readiness: Redis answers and every deployed model has a worker that can serve it."""

import asyncio

from django.conf import settings
from redis.exceptions import RedisError

from apps.predictions.results import result_waiter_get
from apps.predictions.selectors import route_servable, routes_list

REDIS_PING_TIMEOUT_S = 1.0


async def platform_readiness() -> tuple[bool, dict[str, object]]:
    """(ready, details) where details name what is missing."""
    redis = result_waiter_get().redis
    try:
        await asyncio.wait_for(redis.ping(), REDIS_PING_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError) as exc:
        return False, {"redis": f"unreachable: {exc or 'timeout'}"}
    environment = settings.INFERENCE_ENVIRONMENT
    routes = await routes_list()
    if not routes:
        return False, {"redis": "ok", "models": {}, "reason": f"no model deployed in {environment!r}"}
    models = {r.live.name: {"version": r.live.version, "ready": await route_servable(r)} for r in routes}
    ready = all(m["ready"] for m in models.values())
    details: dict[str, object] = {"redis": "ok", "environment": environment, "models": models}
    if not ready:
        details["reason"] = f"no worker has loaded {[n for n, m in models.items() if not m['ready']]}"
    return ready, details
