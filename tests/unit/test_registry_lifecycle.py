"""Promotion, gates, rollback, outbox, Redis companion cache and retention, with real Redis and
the real gate subprocess (the demo model loads and scores its validation set)."""

import json
import shutil
from pathlib import Path

import pytest
import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError

from apps.models_registry import selectors
from apps.models_registry.models import Artifact, Deployment, OutboxEvent, RegistryEvent
from apps.models_registry.services import (
    PromotionRefused,
    artifacts_prune,
    deployment_rollback,
    deployment_set,
    environment_next,
    model_version_promote,
    model_version_register,
)
from apps.models_registry.storage import redis_cache_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


def register(folder: Path, name: str = "digits", **overrides: object):  # type: ignore[no-untyped-def]
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


def staff(*perms: str, superuser: bool = False):  # type: ignore[no-untyped-def]
    user_model = get_user_model()
    if superuser:
        return user_model.objects.create_superuser("root", password="x")
    user = user_model.objects.create_user("operator", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    return user_model.objects.get(pk=user.pk)


def test_versions_move_through_environments_in_order(demo_model_dir: Path) -> None:
    version = register(demo_model_dir)
    assert environment_next(version=version) == "dev"
    deployment = model_version_promote(version=version)
    assert deployment.environment == "dev"
    assert environment_next(version=version) == "staging"
    event = RegistryEvent.objects.filter(action=RegistryEvent.Action.PROMOTE).get()
    assert event.details["passed"] is True
    assert [g["name"] for g in event.details["gates"]] == ["checksum", "smoke", "metric"]
    assert event.details["metrics"]["accuracy"] >= 0.95


def test_skipping_an_environment_needs_a_superuser_and_a_reason(demo_model_dir: Path) -> None:
    version = register(demo_model_dir)
    operator = staff("promote_deployment")
    with pytest.raises(PermissionDenied, match="skipping dev, staging"):
        model_version_promote(version=version, environment="prod", user=operator)
    root = get_user_model().objects.create_superuser("root", password="x")
    with pytest.raises(ValidationError, match="written reason"):
        model_version_promote(version=version, environment="prod", user=root)
    assert not Deployment.objects.exists()
    deployment = model_version_promote(
        version=version, environment="prod", user=root, reason="hotfix for incident 42"
    )
    assert deployment.environment == "prod"
    event = RegistryEvent.objects.get(action=RegistryEvent.Action.PROMOTE)
    assert (event.actor, event.reason) == ("root", "hotfix for incident 42")


def test_promotion_needs_the_permission(demo_model_dir: Path) -> None:
    version = register(demo_model_dir)
    with pytest.raises(PermissionDenied):
        model_version_promote(version=version, user=staff())


def test_below_minimum_metric_is_refused_and_recorded(demo_model_dir: Path) -> None:
    live = register(demo_model_dir)
    deployment_set(version=live, environment="dev")
    candidate = register(demo_model_dir)
    candidate.model.gate_minimum = 0.999
    candidate.model.save()
    with pytest.raises(PromotionRefused, match="metric") as refused:
        model_version_promote(version=candidate)
    assert [g.passed for g in refused.value.report.results] == [True, True, False]
    assert selectors.deployment_get_active(model_name="digits", environment="dev").version == live
    failed = RegistryEvent.objects.get(action=RegistryEvent.Action.GATE_FAILED)
    assert failed.version == candidate
    assert failed.details["passed"] is False
    assert OutboxEvent.objects.count() == 1  # only the bootstrap deployment


def test_tampered_artifact_is_refused_before_loading(demo_model_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    version = register(demo_model_dir)
    model = version.artifacts.get(kind=Artifact.Kind.MODEL)
    path = Path(settings.ARTIFACTS_ROOT) / model.uri.removeprefix("local://")
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(PromotionRefused, match="checksum") as refused:
        model_version_promote(version=version)
    assert len(refused.value.report.results) == 1
    assert not Deployment.objects.exists()


def test_a_model_that_cannot_load_fails_the_smoke_gate(demo_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(demo_model_dir, broken)
    (broken / "model.keras").write_bytes(b"this is not a keras archive")
    version = register(broken)
    with pytest.raises(PromotionRefused, match="failed to load") as refused:
        model_version_promote(version=version)
    assert [g.name for g in refused.value.report.results] == ["checksum", "smoke"]


def test_rollback_returns_to_the_previous_version_and_writes_the_outbox(demo_model_dir: Path) -> None:
    first, second = register(demo_model_dir), register(demo_model_dir)
    deployment_set(version=first, environment="dev")
    deployment_set(version=second, environment="dev")
    operator = staff("rollback_deployment")
    deployment = deployment_rollback(model=first.model, environment="dev", user=operator)
    assert (deployment.version, deployment.previous_version) == (first, second)
    events = list(OutboxEvent.objects.order_by("created_at"))
    assert [e.payload["action"] for e in events] == ["promote", "promote", "rollback"]
    payload = events[-1].payload
    assert payload["event_id"] == str(events[-1].event_id)
    assert (payload["model"], payload["version"], payload["previous_version"]) == ("digits", 1, 2)
    assert payload["environment"] == "dev"
    assert payload["actor"] == "operator"
    assert {a["filename"] for a in payload["artifacts"]} == {
        "model.keras",
        "preprocessing.pickle",
        "validation.csv",
    }
    assert all(len(a["sha256"]) == 64 and a["uri"] for a in payload["artifacts"])
    rollback = RegistryEvent.objects.get(action=RegistryEvent.Action.ROLLBACK)
    assert (rollback.from_version, rollback.to_version) == (2, 1)


def test_a_refused_switch_writes_nothing(demo_model_dir: Path) -> None:
    version = register(demo_model_dir)
    deployment_set(version=version, environment="dev")
    with pytest.raises(PromotionRefused, match="already live"):
        deployment_set(version=version, environment="dev")
    assert OutboxEvent.objects.count() == 1
    with pytest.raises(PromotionRefused, match="no previous version"):
        deployment_rollback(model=version.model, environment="dev")


def test_registry_events_are_append_only(demo_model_dir: Path) -> None:
    event = RegistryEvent.objects.get(action=RegistryEvent.Action.REGISTER, version=register(demo_model_dir))
    event.reason = "rewritten"
    with pytest.raises(ValueError, match="append-only"):
        event.save()


def test_companions_are_cached_in_redis_and_removed_when_replaced(
    demo_model_dir: Path, redis_server: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_server)
    retrained = tmp_path / "retrained"
    shutil.copytree(demo_model_dir, retrained)
    with (retrained / "preprocessing.pickle").open("ab") as handle:
        handle.write(b"\n")  # different bytes, same unpickled content
    first, second = register(demo_model_dir), register(retrained)
    deployment_set(version=first, environment="dev")
    old = first.artifacts.get(kind=Artifact.Kind.PREPROCESSING)
    new = second.artifacts.get(kind=Artifact.Kind.PREPROCESSING)
    assert old.sha256 != new.sha256
    assert client.get(redis_cache_key(old.sha256)) == (demo_model_dir / "preprocessing.pickle").read_bytes()
    deployment_set(version=second, environment="dev")
    assert client.get(redis_cache_key(old.sha256)) is None
    assert client.get(redis_cache_key(new.sha256)) == (retrained / "preprocessing.pickle").read_bytes()
    # The validation set is the same file in both versions: its key is shared and stays.
    validation = second.artifacts.get(kind=Artifact.Kind.VALIDATION)
    assert client.exists(redis_cache_key(validation.sha256))


def test_retention_prunes_idle_versions_beyond_the_newest(demo_model_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
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
