"""A worker child that starts (or restarts) while a rollout runs in its environment loads the
candidate beside the live version, through the real load path (the trained digits model, real
gates, real Redis for readiness marks); a candidate that cannot load never keeps live from it."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from pytest_django import Settings

from apps.models_registry.models import Artifact, Deployment, ModelVersion, RegistryEvent
from apps.models_registry.services.deployments import deployment_set
from apps.models_registry.services.rollouts import rollout_abort, rollout_start
from tests.unit.apps.models_registry.helpers import register
from workers.runtime import ModelRuntime

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


@pytest.fixture
def runtime(settings: Settings) -> Iterator[ModelRuntime]:
    settings.INFERENCE_ENVIRONMENT = "dev"
    started = ModelRuntime(environment="dev", worker_id="test:1")
    yield started
    started.shutdown()


def _rolling_out(folder: Path, strategy: str) -> tuple[ModelVersion, ModelVersion]:
    live, candidate = register(folder), register(folder)
    deployment_set(version=live, environment="dev")
    rollout_start(version=candidate, strategy=strategy, environment="dev")
    return live, candidate


def test_preload_loads_a_running_rollouts_candidate_beside_live(
    demo_model_dir: Path, runtime: ModelRuntime
) -> None:
    live, candidate = _rolling_out(demo_model_dir, "canary")

    runtime.preload(model_names=["digits"])

    assert runtime.loaded_versions() == [("digits", live.number), ("digits", candidate.number)]
    rows = {"pixels": np.zeros((1, 64), dtype=np.float32)}
    answer = runtime.predictor_get(model_name="digits", version=candidate.number).predict(rows)
    assert answer["scores"].shape == (1, 10)

    # Once the rollout has ended, a child that starts loads live alone again.
    runtime.shutdown()
    rollout_abort(rollout=candidate.rollouts.get(), reason="done")
    runtime.preload(model_names=["digits"])
    assert runtime.loaded_versions() == [("digits", live.number)]


def test_a_candidate_that_cannot_load_is_logged_and_live_still_loads(
    demo_model_dir: Path, runtime: ModelRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    live, candidate = _rolling_out(demo_model_dir, "shadow")
    # Its stored model replaced after the gates passed: the worker's checksum check refuses it.
    model = candidate.artifacts.get(kind=Artifact.Kind.MODEL)
    Path(settings.ARTIFACTS_ROOT, "digits", str(candidate.number), model.filename).write_bytes(b"x" * 64)
    shutil.rmtree(settings.ARTIFACT_CACHE_DIR, ignore_errors=True)

    runtime.preload(model_names=["digits"])

    assert runtime.loaded_versions() == [("digits", live.number)]
    assert f"could not preload {candidate}, the candidate of the shadow rollout running in dev" in caplog.text
    failed = RegistryEvent.objects.get(action=RegistryEvent.Action.LOAD_FAILED)
    assert failed.to_version == candidate.number
    assert Deployment.objects.get(environment="dev").version == live  # a candidate never rolls live back
