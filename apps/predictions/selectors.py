"""What the API needs from the registry, cached in-process for `INFERENCE_REGISTRY_CACHE_S`.

The hot path must not query the database per request; a promotion becomes visible to the API
within the cache period.
"""

import time
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from apps.models_registry import selectors as registry
from apps.predictions.errors import not_found


@dataclass(frozen=True)
class ServedModel:
    """A model version the API can route to: its queue and its signature."""

    name: str
    version: int
    signature: dict[str, Any]
    platform: str = "keras"

    @property
    def queue(self) -> str:
        return f"inference.{self.name}"

    def input_spec(self, name: str | None = None) -> dict[str, Any]:
        inputs = self.signature["inputs"]
        if name is None:
            return inputs[0]
        for spec in inputs:
            if spec["name"] == name:
                return spec
        raise KeyError(name)


_cache: dict[tuple[str, int | None], tuple[float, ServedModel | None]] = {}


def _load(name: str, version: int | None) -> ServedModel | None:
    environment = settings.INFERENCE_ENVIRONMENT
    if version is None:
        deployment = registry.deployment_get_active(model_name=name, environment=environment)
        found = deployment.version if deployment else None
    else:
        found = registry.model_version_get(model_name=name, number=version)
    if found is None:
        return None
    return ServedModel(name=name, version=found.number, signature=found.signature, platform=found.framework)


async def served_model_get(*, name: str, version: int | None = None) -> ServedModel:
    """The deployed version of `name` in this environment, or the pinned `version`; else 404."""
    key = (name, version)
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is None or cached[0] < now:
        cached = (now + settings.INFERENCE_REGISTRY_CACHE_S, await sync_to_async(_load)(name, version))
        _cache[key] = cached
    served = cached[1]
    if served is None:
        if version is None:
            raise not_found(
                f"model {name!r} is not deployed in {settings.INFERENCE_ENVIRONMENT!r}", field="model"
            )
        raise not_found(f"model {name!r} has no version {version}", field="version")
    return served


async def served_models_list() -> list[ServedModel]:
    """Every model deployed in this environment (uncached: used by readiness, not per request)."""

    def load() -> list[ServedModel]:
        return [
            ServedModel(name=d.model.name, version=d.version.number, signature=d.version.signature)
            for d in registry.deployment_list(environment=settings.INFERENCE_ENVIRONMENT)
        ]

    return await sync_to_async(load)()
