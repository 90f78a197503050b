"""Retention: the bytes of versions deployed nowhere go, beyond the newest N; records stay."""

from pathlib import Path

import pytest
from pytest_django import Settings

from apps.models_registry.models import Artifact, RegistryEvent
from apps.models_registry.services.deployments import PromotionRefused, deployment_set, model_version_promote
from apps.models_registry.services.retention import artifacts_prune
from tests.unit.apps.models_registry.helpers import register

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


def test_retention_prunes_idle_versions_beyond_the_newest(demo_model_dir: Path, settings: Settings) -> None:
    settings.ARTIFACT_RETENTION_VERSIONS = 1
    versions = [register(demo_model_dir) for _ in range(4)]
    deployment_set(version=versions[3], environment="dev")
    # v4 live; idle: v3 (kept, newest idle), v2 and v1 pruned.
    pruned = sorted(v.number for v in versions if v.artifacts.filter(pruned_at__isnull=False).exists())
    assert pruned == [1, 2]
    uri = versions[0].artifacts.get(kind=Artifact.Kind.MODEL).uri
    assert not (Path(settings.ARTIFACTS_ROOT) / uri.removeprefix("local://")).exists()
    assert (Path(settings.ARTIFACTS_ROOT) / "digits" / "3" / "model.keras").exists()
    assert RegistryEvent.objects.filter(action=RegistryEvent.Action.PRUNE).count() == 2
    assert artifacts_prune(model=versions[0].model) == []
    with pytest.raises(PromotionRefused, match="pruned"):
        model_version_promote(version=versions[0], environment="dev")
