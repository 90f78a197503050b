"""Promotion through the environments, rollback, the outbox a switch writes and the Redis
companion cache, with real Redis and the real gate subprocess (the demo model loads and scores
its validation set)."""

import shutil
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError

from apps.models_registry import selectors
from apps.models_registry.models import Artifact, Deployment, OutboxEvent, RegistryEvent
from apps.models_registry.services.deployments import (
    PromotionRefused,
    deployment_rollback,
    deployment_set,
    environment_next,
    model_version_promote,
)
from apps.models_registry.storage import redis_cache_key
from tests.unit.apps.models_registry.helpers import register, served, staff

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


def test_versions_move_through_environments_in_order(demo_model_dir: Path) -> None:
    version = register(demo_model_dir)
    assert environment_next(version=version) == "dev"
    deployment = model_version_promote(version=version)
    assert deployment.environment == "dev"
    assert environment_next(version=version) == "staging"
    event = RegistryEvent.objects.filter(action=RegistryEvent.Action.PROMOTE).get()
    assert event.details["passed"] is True
    assert [g["name"] for g in event.details["gates"]] == ["checksum", "signature", "smoke", "metric"]
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


def test_rollback_returns_to_the_previous_version_and_writes_the_outbox(demo_model_dir: Path) -> None:
    first, second = register(demo_model_dir), register(demo_model_dir)
    deployment_set(version=first, environment="dev")
    served(first)
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


def test_one_last_good_version_for_rollbacks_and_for_what_serves(demo_model_dir: Path) -> None:
    """Good: a worker served it since it was last rolled back out. A rollback goes to the last
    good version before the live one, skipping one that never served; the deployment's last good
    version (what serves while the live one cannot load) follows the same rule at each switch."""
    from apps.models_registry.services.deployments import last_good_version

    v1, v2, v3 = (register(demo_model_dir) for _ in range(3))
    deployment_set(version=v1, environment="dev")
    served(v1)
    deployment_set(version=v2, environment="dev")  # never loads anywhere
    assert Deployment.objects.get(environment="dev").last_good_version == v1
    deployment_set(version=v3, environment="dev")
    served(v3)
    model = v1.model
    assert last_good_version(model=model, environment="dev") == v3
    assert last_good_version(model=model, environment="dev", before_live=True) == v1

    deployment = deployment_rollback(model=model, environment="dev", reason="v3 is wrong")
    # Until a worker serves v1 again (its files may not load now), the last good version is one
    # other than v1: none, as v3 was rolled back out and v2 never served.
    assert (deployment.version, deployment.previous_version, deployment.last_good_version) == (v1, v3, None)
    assert deployment.served_at is None
    with pytest.raises(PromotionRefused, match="nothing to roll back to in dev: no earlier version served"):
        deployment_rollback(model=model, environment="dev")  # v2 never served, v3 rolled back
    served(v1)
    assert Deployment.objects.get(environment="dev").last_good_version == v1

    # v3 made live again (say its environment was at fault): good again only once it served.
    deployment_set(version=v3, environment="dev")
    assert Deployment.objects.get(environment="dev").last_good_version == v1
    served(v3)
    assert Deployment.objects.get(environment="dev").last_good_version == v3
    assert last_good_version(model=model, environment="dev", before_live=True) == v1


def test_a_refused_switch_writes_nothing(demo_model_dir: Path) -> None:
    version = register(demo_model_dir)
    deployment_set(version=version, environment="dev")
    with pytest.raises(PromotionRefused, match="already live"):
        deployment_set(version=version, environment="dev")
    assert OutboxEvent.objects.count() == 1
    with pytest.raises(PromotionRefused, match="nothing to roll back to"):
        deployment_rollback(model=version.model, environment="dev")


def test_deployment_set_replaces_the_live_version(demo_model_dir: Path) -> None:
    first = register(demo_model_dir)
    second = register(demo_model_dir)
    deployment_set(version=first, environment="dev")
    deployment_set(version=second, environment="dev")
    live = selectors.deployment_get_active(model_name="digits", environment="dev")
    assert live is not None
    assert live.version == second
    assert selectors.deployment_get_active(model_name="digits", environment="prod") is None
    with pytest.raises(ValidationError, match="unknown environment"):
        deployment_set(version=first, environment="qa")


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


def test_the_last_good_version_is_what_a_worker_loaded_while_it_was_live(demo_model_dir: Path) -> None:
    from apps.models_registry.services.deployments import deployment_served_record

    first, second = register(demo_model_dir), register(demo_model_dir)
    deployment_set(version=first, environment="dev")
    assert not deployment_served_record(model_name="digits", environment="dev", version=2)  # not live
    assert deployment_served_record(model_name="digits", environment="dev", version=1)
    assert not deployment_served_record(model_name="digits", environment="dev", version=1)  # already
    deployment_set(version=second, environment="dev")  # v2 never loads anywhere
    deployment = Deployment.objects.get(environment="dev")
    assert (deployment.version, deployment.previous_version, deployment.last_good_version) == (
        second,
        first,
        first,
    )


def test_a_rollback_switches_only_from_the_version_its_target_was_chosen_for(
    demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promotion landing between a rollback's choice of target and its switch: the rollback is
    refused (it would have rolled the new version back, to a target chosen without it)."""
    from apps.models_registry.services import deployments

    v1, v2, v3 = (register(demo_model_dir) for _ in range(3))
    for version in (v1, v2):
        deployment_set(version=version, environment="dev")
        served(version)
    chosen = deployments.last_good_version
    promoted: list[bool] = []

    def meanwhile(**kwargs: Any) -> Any:
        target = chosen(**kwargs)
        if not promoted:  # once: the promotion's own switch asks too
            promoted.append(True)
            deployment_set(version=v3, environment="dev")  # a colleague's
        return target

    monkeypatch.setattr(deployments, "last_good_version", meanwhile)
    with pytest.raises(deployments.LiveVersionChanged, match="v3 is live now, not v2"):
        deployment_rollback(model=v1.model, environment="dev")
    assert Deployment.objects.get(environment="dev").version == v3
    assert not RegistryEvent.objects.filter(action=RegistryEvent.Action.ROLLBACK).exists()
