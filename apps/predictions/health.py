"""Readiness (Redis answers and every deployed model has a worker that can serve it) and the
platform gauges the API exports at scrape time."""

import asyncio

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily
from redis.exceptions import RedisError

from apps.predictions.errors import ApiError
from apps.predictions.results import result_waiter_get
from apps.predictions.selectors import route_servable, routes_list
from inference_common.priority import queue_lists
from inference_common.readiness import serving_count

REDIS_PING_TIMEOUT_S = 1.0


async def platform_readiness() -> tuple[bool, dict[str, object]]:
    """(ready, details) where details name what is missing."""
    redis = result_waiter_get().redis
    try:
        await asyncio.wait_for(redis.ping(), REDIS_PING_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError) as exc:
        return False, {"redis": f"unreachable: {str(exc) or 'timeout'}"}
    environment = settings.INFERENCE_ENVIRONMENT
    try:
        routes = await routes_list()
    except ApiError:  # the registry never read by this process, and unreachable now
        return False, {"redis": "ok", "registry": "unreachable"}
    if not routes:
        return False, {"redis": "ok", "models": {}, "reason": f"no model deployed in {environment!r}"}
    models = {r.live.name: {"version": r.live.version, "ready": await route_servable(r)} for r in routes}
    ready = all(m["ready"] for m in models.values())
    details: dict[str, object] = {"redis": "ok", "environment": environment, "models": models}
    if not ready:
        details["reason"] = f"no worker has loaded {[n for n, m in models.items() if not m['ready']]}"
    return ready, details


async def platform_gauges() -> list[GaugeMetricFamily]:
    """Per deployed model: its queue's length (Redis list) and the workers serving each version.

    Computed at scrape time, so every API process reports the same values: aggregate with
    max(), not sum(), across API instances.
    """
    depth = GaugeMetricFamily(
        "inference_queue_depth",
        "Tasks waiting in the model's queue (Redis list length).",
        labels=["model", "queue"],
    )
    serving = GaugeMetricFamily(
        "inference_model_serving_workers",
        "Worker processes with a fresh readiness mark for a deployed version.",
        labels=["model", "version", "role"],
    )
    redis_up = GaugeMetricFamily("inference_redis_up", "1 if the API reaches Redis.")
    redis = result_waiter_get().redis
    try:
        for route in await routes_list():
            live = route.live
            async with redis.pipeline(transaction=False) as pipe:
                for name in queue_lists(live.queue):  # every priority level's list
                    pipe.llen(name)
                depth.add_metric([live.name, live.queue], sum(await pipe.execute()))
            roles = [("live", live)] + ([("previous", route.previous)] if route.previous else [])
            if route.last_good is not None and route.last_good not in (live, route.previous):
                roles.append(("last_good", route.last_good))
            for role, served in roles:
                count = await serving_count(
                    redis,
                    environment=settings.INFERENCE_ENVIRONMENT,
                    model=served.name,
                    version=served.version,
                )
                serving.add_metric([served.name, str(served.version), role], count)
    except (RedisError, OSError):
        redis_up.add_metric([], 0)
        return [redis_up]
    except ApiError:  # the deployments never read by this process, and the registry down
        return [redis_up]
    redis_up.add_metric([], 1)
    return [depth, serving, redis_up]
