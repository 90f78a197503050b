"""What the API needs from the registry, cached in-process for `INFERENCE_REGISTRY_CACHE_S`.

The hot path must not query the database per request; a promotion becomes visible to the API
within the cache period. Traffic then moves to the new version only once a worker has it loaded
(its readiness mark is in Redis); until then, and if it never loads, the previous version keeps
serving. That is the "load the new one, then switch" half of a hot swap that lives in the API.

While the database is unreachable (PostgreSQL restarting, its host cut off), the last routes
this process loaded keep serving and readiness uses the last list of deployments; the database
is asked again every DATABASE_RETRY_S. Only a route this process never loaded answers 503.
"""

import asyncio
import dataclasses
import logging
import random
import time
import zlib
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from apps.models_registry import selectors as registry
from apps.models_registry.models import Deployment, ModelVersion, Rollout, queue_name
from apps.predictions.errors import not_found, unavailable
from apps.predictions.fastpath import db_fresh
from apps.predictions.results import result_waiter_get
from inference_common.readiness import serving_count
from inference_project.errors import DATABASE_UNAVAILABLE, DATABASE_UNAVAILABLE_MESSAGE

logger = logging.getLogger(__name__)

# While traffic waits on the previous version, look again this often for the new one.
SWITCH_RECHECK_S = 0.2
# While the database is unreachable, ask it again this often per route.
DATABASE_RETRY_S = 1.0


@dataclass(frozen=True)
class ServedModel:
    """A model version the API can route to: its queue and its signature."""

    name: str
    version: int
    signature: dict[str, Any]
    platform: str = "keras"
    max_batch_size: int = 64
    max_delay_ms: float = 2.0

    @property
    def queue(self) -> str:
        return queue_name(self.name)

    def input_spec(self, name: str | None = None) -> dict[str, Any]:
        inputs: list[dict[str, Any]] = self.signature["inputs"]
        if name is None:
            return inputs[0]
        for spec in inputs:
            if spec["name"] == name:
                return spec
        raise KeyError(name)

    @classmethod
    def of(cls, version: ModelVersion) -> "ServedModel":
        return cls(
            name=version.model.name,
            version=version.number,
            signature=version.signature,
            platform=version.framework,
            max_batch_size=version.model.max_batch_size,
            max_delay_ms=version.model.max_delay_ms,
        )


def canary_bucket(*, rollout: int, routing_key: str) -> int:
    """0..99, fixed for a routing key within one rollout: a key whose bucket is under the
    candidate's weight goes to the candidate, so one client sees one version, and the keys that
    reached it at 5 % still do at 25 %."""
    return zlib.crc32(f"{rollout}:{routing_key}".encode()) % 100


@dataclass(frozen=True)
class Route:
    """Where a model's unpinned requests go: the live version, or while no worker has it loaded,
    the previous one (a swap under way) or the last good one (the live version cannot load).
    During a canary rollout (and once a worker has it loaded), `weight` percent of the routing
    keys go to its `candidate`; during a shadow rollout, `mirror_percent` percent of the requests
    are copied to its `shadow` once answered (apps/predictions/shadow.py)."""

    live: ServedModel
    previous: ServedModel | None = None
    last_good: ServedModel | None = None
    candidate: ServedModel | None = None
    weight: int = 0
    rollout: int | None = None
    shadow: ServedModel | None = None
    mirror_percent: int = 0

    def pick(self, routing_key: str | None) -> ServedModel:
        if self.candidate is None or self.rollout is None or not self.weight or routing_key is None:
            return self.live
        if canary_bucket(rollout=self.rollout, routing_key=routing_key) < self.weight:
            return self.candidate
        return self.live

    def mirror(self, served: ServedModel) -> ServedModel | None:
        """The shadow a request answered by `served` is copied to (`mirror_percent` of them, drawn
        per request), or None: only requests the live version answers are mirrored."""
        if self.shadow is None or served != self.live:
            return None
        if random.random() * 100 >= self.mirror_percent:  # noqa: S311 (a sample, not a secret)
            return None
        return self.shadow

    @property
    def fallbacks(self) -> list[ServedModel]:
        found = [
            m for m in (self.previous, self.last_good) if m is not None and m.version != self.live.version
        ]
        return [m for i, m in enumerate(found) if m not in found[:i]]

    @classmethod
    def of(cls, deployment: Deployment, rollout: Rollout | None = None) -> "Route":
        previous, good = deployment.previous_version, deployment.last_good_version
        canary = rollout is not None and rollout.weight > 0
        shadow = rollout is not None and rollout.mirror_percent > 0 and not canary
        return cls(
            ServedModel.of(deployment.version),
            ServedModel.of(previous) if previous else None,
            ServedModel.of(good) if good else None,
            candidate=ServedModel.of(rollout.candidate) if rollout is not None and canary else None,
            weight=rollout.weight if rollout is not None else 0,
            rollout=rollout.pk if rollout is not None else None,
            shadow=ServedModel.of(rollout.candidate) if rollout is not None and shadow else None,
            mirror_percent=rollout.mirror_percent if rollout is not None and shadow else 0,
        )


_cache: dict[tuple[str, int | None], tuple[float, Route | None]] = {}
# One reload per key at a time: when an entry expires under load, the requests that arrive
# during the reload wait for it instead of each querying the database.
_reloading: dict[tuple[str, int | None], asyncio.Future[tuple[float, Route | None]]] = {}


def _route_load(name: str, version: int | None) -> Route | None:
    db_fresh()
    if version is None:
        deployment = registry.deployment_get_active(
            model_name=name, environment=settings.INFERENCE_ENVIRONMENT
        )
        if deployment is None:
            return None
        return Route.of(
            deployment, registry.rollout_running(model_name=name, environment=deployment.environment)
        )
    found = registry.model_version_get(model_name=name, number=version)
    if found is None or not registry.version_is_deployed_anywhere(model_name=name, number=version):
        return None
    return Route(ServedModel.of(found))


async def served_model_ready(served: ServedModel) -> bool:
    count = await serving_count(
        result_waiter_get().redis,
        environment=settings.INFERENCE_ENVIRONMENT,
        model=served.name,
        version=served.version,
    )
    return count > 0


async def served_model_get(
    *, name: str, version: int | None = None, routing_key: str | None = None
) -> ServedModel:
    """Where to send a request for `name` (pinned to `version` if given); 404 if nowhere.
    `routing_key` (sticky routing during a canary; None: the live version) picks the side."""
    return (await route_get(name=name, version=version)).pick(routing_key)


async def route_get(*, name: str, version: int | None = None) -> Route:
    """The route of `name`'s requests (pinned to `version` if given); 404 if nowhere."""
    key = (name, version)
    cached = _cache.get(key)
    if cached is None or cached[0] < time.monotonic():
        cached = await _route_reload(key)
    route = cached[1]
    if route is None:
        if version is None:
            raise not_found(
                f"model {name!r} is not deployed in {settings.INFERENCE_ENVIRONMENT!r}", field="model"
            )
        raise not_found(f"model {name!r} has no deployed version {version}", field="version")
    return route


async def _route_reload(key: tuple[str, int | None]) -> tuple[float, Route | None]:
    """Reload `key`, or join the reload already running (in its own task: a request that is
    cancelled meanwhile does not cancel it for the others)."""
    task = _reloading.get(key)
    if task is None:
        task = _reloading[key] = asyncio.ensure_future(_route_fetch(key))
        task.add_done_callback(lambda _: _reloading.pop(key, None))
    return await asyncio.shield(task)


async def _route_fetch(key: tuple[str, int | None]) -> tuple[float, Route | None]:
    try:
        route = await sync_to_async(_route_load)(*key)
    except DATABASE_UNAVAILABLE as exc:
        stale = _cache.get(key)
        if stale is None:
            raise unavailable(DATABASE_UNAVAILABLE_MESSAGE) from exc
        logger.warning("registry unreachable (%s); routing %s on its last route", exc, key[0])
        cached = _cache[key] = (time.monotonic() + DATABASE_RETRY_S, stale[1])
        return cached
    ttl = settings.INFERENCE_REGISTRY_CACHE_S
    if route is not None and route.candidate is not None and not await served_model_ready(route.candidate):
        # A canary's candidate no worker has loaded yet: live serves its share meanwhile.
        route = dataclasses.replace(route, candidate=None)
        ttl = min(ttl, SWITCH_RECHECK_S)
    if route is not None and route.shadow is not None and not await served_model_ready(route.shadow):
        route = dataclasses.replace(route, shadow=None)  # nothing mirrored until it is loaded
        ttl = min(ttl, SWITCH_RECHECK_S)
    if route is not None and route.fallbacks and not await served_model_ready(route.live):
        # The live version is not loaded anywhere (yet): the previous one while a swap is under
        # way, else the last good one; looked at again soon.
        for fallback in route.fallbacks:
            if await served_model_ready(fallback):
                route = Route(fallback, fallback)
                break
        ttl = min(ttl, SWITCH_RECHECK_S)
    cached = _cache[key] = (time.monotonic() + ttl, route)
    return cached


# The last list routes_list loaded: what readiness and the gauges use while the database is out.
_routes_last: list[Route] | None = None


async def routes_list() -> list[Route]:
    """Every model deployed in this environment (read each time: used by readiness and the
    gauges, not per request); the last list read while the database is unreachable."""
    global _routes_last

    def load() -> list[Route]:
        db_fresh()
        return [Route.of(d) for d in registry.deployment_list(environment=settings.INFERENCE_ENVIRONMENT)]

    try:
        routes = await sync_to_async(load)()
    except DATABASE_UNAVAILABLE as exc:
        if _routes_last is None:
            raise unavailable(DATABASE_UNAVAILABLE_MESSAGE) from exc
        logger.warning("registry unreachable (%s); readiness uses the last deployments read", exc)
        return _routes_last
    _routes_last = routes
    return routes


async def route_servable(route: Route) -> bool:
    """A worker has the live version loaded, or one of its fallbacks (the previous version during
    a swap, the last good one while the live one cannot load)."""
    for served in (route.live, *route.fallbacks):
        if await served_model_ready(served):
            return True
    return False
