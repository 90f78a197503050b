"""Retention: the stored bytes of versions deployed nowhere go, beyond the newest
ARTIFACT_RETENTION_VERSIONS of them; their records (and checksums) stay."""

from django.conf import settings
from django.utils import timezone

from apps.models_registry.models import Deployment, RegisteredModel, RegistryEvent
from apps.models_registry.services.events import registry_event_record
from apps.models_registry.storage import redis_cache_delete, storage_get


def artifacts_prune(*, model: RegisteredModel) -> list[int]:
    """Remove stored bytes of versions deployed nowhere, beyond the newest N such versions."""
    live = set(Deployment.objects.filter(model=model).values_list("version_id", flat=True))
    for kept in ("previous_version_id", "last_good_version_id"):  # rollback targets
        live |= set(
            Deployment.objects.filter(model=model, **{f"{kept}__isnull": False}).values_list(kept, flat=True)
        )
    idle = [v for v in model.versions.order_by("-number") if v.pk not in live]
    pruned: list[int] = []
    storage = storage_get()
    for version in idle[settings.ARTIFACT_RETENTION_VERSIONS :]:
        artifacts = list(version.artifacts.filter(pruned_at__isnull=True))
        if not artifacts:
            continue
        for artifact in artifacts:
            storage.delete(uri=artifact.uri)
        redis_cache_delete(sha256s=[a.sha256 for a in artifacts])
        version.artifacts.filter(pk__in=[a.pk for a in artifacts]).update(pruned_at=timezone.now())
        registry_event_record(
            model=model,
            action=RegistryEvent.Action.PRUNE,
            version=version,
            actor="retention",
            details={"artifacts": [a.uri for a in artifacts]},
        )
        pruned.append(version.number)
    return pruned
