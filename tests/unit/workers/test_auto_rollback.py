"""A live version that cannot load and serves nowhere is rolled back to the last good version
by itself, through the worker's real load path (predictor_build), and the history says so."""

import hashlib
import shutil
from pathlib import Path

import pytest
import redis
from django.conf import settings
from pytest_django import Settings

from apps.models_registry.models import Artifact, Deployment, ModelVersion, RegistryEvent
from apps.models_registry.services.deployments import (
    AUTO_ROLLBACK_ACTOR,
    deployment_served_record,
    deployment_set,
    last_good_version,
)
from inference_common.readiness import serving_mark
from tests.unit.apps.models_registry.helpers import register
from workers.runtime import ModelUnavailable, predictor_build

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


def broken(folder: Path) -> ModelVersion:
    """A registered version whose stored model is not a Keras file, recorded with its real
    checksum (as if it had been registered so): the load itself fails, on every worker."""
    version = register(folder)
    artifact = version.artifacts.get(kind=Artifact.Kind.MODEL)
    data = b"not a keras archive" * 100
    Path(settings.ARTIFACTS_ROOT, "digits", str(version.number), artifact.filename).write_bytes(data)
    Artifact.objects.filter(pk=artifact.pk).update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    return version


def live() -> Deployment:
    return Deployment.objects.select_related("version", "previous_version", "last_good_version").get(
        environment="dev"
    )


def load(version: ModelVersion, worker: str = "host-a:1") -> None:
    with pytest.raises(ModelUnavailable):
        predictor_build(model_name="digits", version_number=version.number, worker_id=worker)


@pytest.fixture
def good(demo_model_dir: Path) -> ModelVersion:
    version = register(demo_model_dir)
    deployment_set(version=version, environment="dev")
    deployment_served_record(model_name="digits", environment="dev", version=version.number)
    return version


def test_two_broken_deployments_in_a_row_are_rolled_back_to_the_last_good_version(
    demo_model_dir: Path, good: ModelVersion
) -> None:
    first = broken(demo_model_dir)
    deployment_set(version=first, environment="dev")
    load(first)
    assert live().version == good
    rollback = RegistryEvent.objects.get(action=RegistryEvent.Action.ROLLBACK)
    assert (rollback.from_version, rollback.to_version, rollback.actor) == (
        first.number,
        good.number,
        AUTO_ROLLBACK_ACTOR,
    )
    assert "could not load on host-a:1 and serves nowhere" in rollback.reason
    assert rollback.details["failed_version"] == first.number

    # The next deployment's previous version is the one that served, not the broken one.
    second = broken(demo_model_dir)
    deployment_set(version=second, environment="dev")
    assert live().previous_version == good
    load(second, worker="host-b:2")
    load(second, worker="host-c:1")  # a second worker failing too: one rollback, not two
    assert live().version == good
    rollbacks = RegistryEvent.objects.filter(action=RegistryEvent.Action.ROLLBACK)
    assert [(e.from_version, e.to_version) for e in rollbacks.order_by("id")] == [
        (first.number, good.number),
        (second.number, good.number),
    ]
    failed = RegistryEvent.objects.filter(action=RegistryEvent.Action.LOAD_FAILED)
    assert sorted(e.to_version or 0 for e in failed) == [first.number, second.number, second.number]
    # Both broken versions were rolled back out: a manual rollback has nowhere to go.
    assert last_good_version(model=good.model, environment="dev", before_live=True) is None


def test_no_automatic_rollback_while_the_version_serves_elsewhere_or_storage_is_down(
    demo_model_dir: Path, good: ModelVersion, settings: Settings
) -> None:
    candidate = broken(demo_model_dir)
    deployment_set(version=candidate, environment="dev")
    client = redis.Redis.from_url(settings.REDIS_URL)
    serving_mark(client, environment="dev", model="digits", version=candidate.number, worker_id="host-b:1")
    load(candidate)  # it loaded on host-b: this host's trouble
    assert live().version == candidate
    client.delete(f"inference:serving:dev:digits:{candidate.number}")

    stored = Path(settings.ARTIFACTS_ROOT, "digits", str(candidate.number))
    for path in stored.iterdir():
        path.unlink()  # storage that cannot be read now (an OSError) may be read later
    shutil.rmtree(settings.ARTIFACT_CACHE_DIR, ignore_errors=True)
    load(candidate)
    assert live().version == candidate

    settings.INFERENCE_AUTO_ROLLBACK = False
    other = broken(demo_model_dir)
    deployment_set(version=other, environment="dev")
    load(other)
    assert live().version == other
    assert not RegistryEvent.objects.filter(action=RegistryEvent.Action.ROLLBACK).exists()
    assert RegistryEvent.objects.filter(action=RegistryEvent.Action.LOAD_FAILED).count() == 3


def test_with_two_workers_up_one_failing_worker_is_not_enough(
    demo_model_dir: Path, good: ModelVersion, settings: Settings
) -> None:
    """One worker's failure may be its host's (while the others still load): with two workers
    serving the model, the rollback waits for a second one to fail."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for worker in ("host-a:1", "host-b:1"):
        serving_mark(client, environment="dev", model="digits", version=good.number, worker_id=worker)
    candidate = broken(demo_model_dir)
    deployment_set(version=candidate, environment="dev")
    load(candidate, worker="host-a:1")
    load(candidate, worker="host-a:1")  # the same worker again: still one
    assert live().version == candidate
    load(candidate, worker="host-b:1")
    assert live().version == good
    assert (
        RegistryEvent.objects.filter(action=RegistryEvent.Action.ROLLBACK, actor=AUTO_ROLLBACK_ACTOR).count()
        == 1
    )
