"""What the registry's tests share: a version registered from a model folder, a staff user, a
live version and a candidate, and the figures workers record for a rollout's analysis."""

import json
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from apps.models_registry.models import ModelVersion
from apps.models_registry.services.deployments import deployment_served_record, deployment_set
from apps.models_registry.services.registration import model_version_register
from inference_common.version_stats import version_stats_record


def register(folder: Path, name: str = "digits", **overrides: Any) -> ModelVersion:
    card = json.loads((folder / "model_card.json").read_text())
    files = [p for p in folder.iterdir() if p.name != "model_card.json"]
    return model_version_register(
        **{
            "name": name,
            "files": files,
            "signature": card["signature"],
            "metrics": card["metrics"],
            **overrides,
        }
    )


def staff(*perms: str, superuser: bool = False) -> Any:
    user_model = get_user_model()
    if superuser:
        return user_model.objects.create_superuser("root", password="x")
    user = user_model.objects.create_user("operator", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    return user_model.objects.get(pk=user.pk)


def live_and_candidate(folder: Path) -> tuple[ModelVersion, ModelVersion]:
    """Two digits versions from `folder`: the first live in dev, the second a rollout's candidate."""
    live, candidate = register(folder), register(folder)
    deployment_set(version=live, environment="dev")
    return live, candidate


def figures_write(
    version: int,
    *,
    requests: int,
    errors: int = 0,
    latency_s: float = 0.002,
    confidence: float = 0.9,
    at: float | None = None,
) -> None:
    """What inference workers record for `requests` answered requests of digits `version` in dev,
    10 per batch (`errors` spread over them), in the 5 s bucket of `at` (else now)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    batches = requests // 10
    for _ in range(batches):
        version_stats_record(
            client,
            environment="dev",
            model="digits",
            version=version,
            requests=10,
            errors=errors // max(1, batches),
            rows=10,
            latency_s=latency_s,
            confidence_sum=confidence * 10,
            confidence_rows=10,
            now=at,
        )


def served(version: ModelVersion, environment: str = "dev", worker: str = "test-host:1") -> None:
    """What a worker reports once it loaded the live version (workers/runtime.py served_record):
    only a version that served counts as good for a rollback."""
    assert deployment_served_record(
        model_name=version.model.name, environment=environment, version=version.number, worker_id=worker
    )
