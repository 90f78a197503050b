"""Readiness: Redis answers and a worker has loaded each deployed model's live version."""

import asyncio

from django.conf import settings
from redis.exceptions import RedisError

from apps.predictions.readiness import serving_count
from apps.predictions.results import result_waiter_get
from apps.predictions.selectors import ServedModel, served_models_list

REDIS_PING_TIMEOUT_S = 1.0


async def served_model_ready(served: ServedModel) -> bool:
    redis = result_waiter_get().redis
    count = await serving_count(
        redis, environment=settings.INFERENCE_ENVIRONMENT, model=served.name, version=served.version
    )
    return count > 0


async def platform_readiness() -> tuple[bool, dict[str, object]]:
    """(ready, details) where details name what is missing."""
    redis = result_waiter_get().redis
    try:
        await asyncio.wait_for(redis.ping(), REDIS_PING_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError) as exc:
        return False, {"redis": f"unreachable: {exc or 'timeout'}"}
    served = await served_models_list()
    if not served:
        return False, {
            "redis": "ok",
            "models": {},
            "reason": f"no model deployed in {settings.INFERENCE_ENVIRONMENT!r}",
        }
    models = {}
    for model in served:
        models[model.name] = {
            "version": model.version,
            "ready": await served_model_ready(model),
        }
    ready = all(m["ready"] for m in models.values())
    details: dict[str, object] = {
        "redis": "ok",
        "environment": settings.INFERENCE_ENVIRONMENT,
        "models": models,
    }
    if not ready:
        waiting = [name for name, m in models.items() if not m["ready"]]
        details["reason"] = f"no worker has loaded {waiting}"
    return ready, details
