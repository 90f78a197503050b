"""The gates before a version may serve: checksum, smoke (the real gate subprocess loads the demo
model and scores its validation set) and the metric minimum; a failure changes nothing."""

import shutil
from pathlib import Path

import pytest
from pytest_django import Settings

from apps.models_registry import selectors
from apps.models_registry.models import Artifact, Deployment, OutboxEvent, RegistryEvent
from apps.models_registry.services.deployments import PromotionRefused, deployment_set, model_version_promote
from tests.hostile import keras_without_weights
from tests.unit.apps.models_registry.helpers import register

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


def test_below_minimum_metric_is_refused_and_recorded(demo_model_dir: Path) -> None:
    live = register(demo_model_dir)
    deployment_set(version=live, environment="dev")
    candidate = register(demo_model_dir)
    candidate.model.gate_minimum = 0.999
    candidate.model.save()
    with pytest.raises(PromotionRefused, match="metric") as refused:
        model_version_promote(version=candidate)
    assert refused.value.report is not None
    assert [g.passed for g in refused.value.report.results] == [True, True, True, False]
    active = selectors.deployment_get_active(model_name="digits", environment="dev")
    assert active is not None and active.version == live
    failed = RegistryEvent.objects.get(action=RegistryEvent.Action.GATE_FAILED)
    assert failed.version == candidate
    assert failed.details["passed"] is False
    assert OutboxEvent.objects.count() == 1  # only the bootstrap deployment


def test_tampered_artifact_is_refused_before_loading(demo_model_dir: Path, settings: Settings) -> None:
    version = register(demo_model_dir)
    model = version.artifacts.get(kind=Artifact.Kind.MODEL)
    path = Path(settings.ARTIFACTS_ROOT) / model.uri.removeprefix("local://")
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(PromotionRefused, match="checksum") as refused:
        model_version_promote(version=version)
    assert refused.value.report is not None
    assert len(refused.value.report.results) == 1
    assert not Deployment.objects.exists()


def test_a_model_that_cannot_load_fails_the_smoke_gate(demo_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(demo_model_dir, broken)
    keras_without_weights(demo_model_dir / "model.keras", broken / "model.keras")  # checks pass, load fails
    version = register(broken)
    with pytest.raises(PromotionRefused, match="failed to load") as refused:
        model_version_promote(version=version)
    assert refused.value.report is not None
    assert [g.name for g in refused.value.report.results] == ["checksum", "signature", "smoke"]
