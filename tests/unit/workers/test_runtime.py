"""A worker child's runtime: what it loads at start-up when the live version cannot load."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from apps.models_registry.services.deployments import deployment_served_record, deployment_set
from tests.unit.apps.models_registry.helpers import register
from workers import runtime as runtime_module
from workers.predictor import ModelFiles, Predictor
from workers.runtime import ModelRuntime, ModelUnavailable

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


class Loaded(Predictor):
    def load(self) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs

    def unload(self) -> None:
        pass


def test_a_restart_with_a_broken_live_version_loads_the_last_good_one(
    demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, broken = register(demo_model_dir), register(demo_model_dir)
    deployment_set(version=good, environment="dev")
    deployment_served_record(model_name="digits", environment="dev", version=good.number)
    deployment_set(version=broken, environment="dev")
    attempts: list[int] = []

    def build(*, model_name: str, version_number: int, worker_id: str) -> Predictor:
        attempts.append(version_number)
        if version_number == broken.number:
            raise ModelUnavailable("load_failed", "refused")
        return Loaded(ModelFiles(model=Path("unused")))

    monkeypatch.setattr(runtime_module, "predictor_build", build)
    monkeypatch.setattr(ModelRuntime, "heartbeat", lambda self: None)
    runtime: Any = ModelRuntime(environment="dev", worker_id="test:1")

    runtime.preload(model_names=["digits"])

    assert attempts == [broken.number, good.number]
    assert runtime.loaded_versions() == [("digits", good.number)]


def test_a_version_found_loaded_when_made_live_again_is_reported_served(
    demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollback to a version the child has not retired yet loads nothing: the swap itself
    reports it served, so it is the last good version again at once."""
    from apps.models_registry.models import Deployment, RegistryEvent
    from apps.models_registry.services.deployments import deployment_rollback

    first, second = register(demo_model_dir), register(demo_model_dir)
    monkeypatch.setattr(runtime_module, "predictor_build", lambda **_: Loaded(ModelFiles(model=Path("x"))))
    monkeypatch.setattr(ModelRuntime, "heartbeat", lambda self: None)
    runtime: Any = ModelRuntime(environment="dev", worker_id="host-a:1")
    for version in (first, second):
        deployment_set(version=version, environment="dev")
        runtime.load_watched(model_name="digits", version=version.number, load_timeout_s=60)
        runtime.swap(model_name="digits", version=version.number, grace_s=0, load_timeout_s=60)
    deployment_rollback(model=first.model, environment="dev", reason="errors up")

    runtime.swap(model_name="digits", version=first.number, grace_s=0, load_timeout_s=60)

    deployment = Deployment.objects.get(environment="dev")
    assert (deployment.version, deployment.last_good_version) == (first, first)
    assert deployment.served_at is not None
    served = RegistryEvent.objects.filter(action=RegistryEvent.Action.SERVED).order_by("id")
    assert [(e.to_version, e.actor) for e in served] == [(1, "host-a:1"), (2, "host-a:1"), (1, "host-a:1")]
