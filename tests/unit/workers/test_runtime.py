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
