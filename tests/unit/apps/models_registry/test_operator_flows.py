"""Promotion and rollback an operator can trust: one version per model per action, rollback to
the last version never rolled back out, "went through" an environment, reasons in the admin."""

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from apps.models_registry.models import Deployment, RegistryEvent
from apps.models_registry.services.deployments import (
    LiveVersionChanged,
    PromotionRefused,
    deployment_rollback,
    environment_next,
    environment_passed,
    last_good_version,
    model_version_promote,
)
from tests.unit.apps.models_registry.helpers import register, served, staff

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]
VERSIONS = "/admin/models_registry/modelversion/"
DEPLOYMENTS = "/admin/models_registry/deployment/"


@pytest.fixture
def gates_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gates' own tests load the model; here they pass so the flows are quick."""
    from apps.models_registry.services import deployments, gates

    def passed(*, version: object, environment: str) -> gates.GateReport:
        return gates.GateReport(results=[gates.GateResult("checksum", True, "ok")])

    monkeypatch.setattr(deployments, "gates_run", passed)


def live(environment: str) -> int:
    return Deployment.objects.get(environment=environment).version.number


@pytest.mark.usefixtures("gates_pass")
def test_rollback_goes_back_through_the_history_never_forward(demo_model_dir: Path) -> None:
    v1, v2, v3 = (register(demo_model_dir) for _ in range(3))
    for version in (v1, v2, v3):
        model_version_promote(version=version, environment="dev")
        served(version)
    model = v1.model

    assert last_good_version(model=model, environment="dev", before_live=True) == v2
    deployment_rollback(model=model, environment="dev", reason="v3 answers slowly")
    assert live("dev") == 2
    deployment_rollback(model=model, environment="dev")  # v2 was not rolled back yet: v1
    assert live("dev") == 1
    with pytest.raises(PromotionRefused, match="nothing to roll back to in dev"):
        deployment_rollback(model=model, environment="dev")  # v2 and v3 were rolled back out
    assert live("dev") == 1
    rollback = RegistryEvent.objects.filter(action="rollback").order_by("created_at", "id").first()
    assert rollback is not None and rollback.reason == "v3 answers slowly"


@pytest.mark.usefixtures("gates_pass")
def test_only_a_version_that_went_through_an_environment_goes_on_without_a_skip(demo_model_dir: Path) -> None:
    v1, v2 = register(demo_model_dir), register(demo_model_dir)
    model_version_promote(version=v1, environment="dev")
    served(v1)
    model_version_promote(version=v2, environment="dev")
    assert environment_passed(version=v1, environment="dev")  # replaced by a newer version
    deployment_rollback(model=v1.model, environment="dev")
    # v2 was rolled back out of dev: it is offered dev again, not staging.
    assert not environment_passed(version=v2, environment="dev")
    assert environment_next(version=v2) == "dev"
    root = staff(superuser=True)
    with pytest.raises(Exception, match="requires a written reason"):
        model_version_promote(version=v2, environment="staging", user=root)

    # Live in staging for a moment, then an older version promoted over it: v2 did not go through.
    model_version_promote(version=v2, environment="staging", user=root, reason="hotfix, tested by hand")
    model_version_promote(version=v1, environment="staging")
    assert not environment_passed(version=v2, environment="staging")
    with pytest.raises(Exception, match="skipping dev, staging to reach prod requires a written reason"):
        model_version_promote(version=v2, environment="prod", user=root)
    operator = staff("promote_deployment")
    with pytest.raises(Exception, match="requires a superuser"):
        model_version_promote(version=v2, environment="prod", user=operator, reason="please")


def admin(user: object) -> Client:
    client = Client()
    client.force_login(user)  # type: ignore[arg-type]
    return client


@pytest.mark.usefixtures("gates_pass")
def test_the_admin_promotes_one_version_per_model_to_a_chosen_environment(demo_model_dir: Path) -> None:
    v1, v2 = register(demo_model_dir), register(demo_model_dir)
    root = admin(staff(superuser=True))
    both = {"action": "promote_next", "_selected_action": [v1.pk, v2.pk]}
    refused = root.post(VERSIONS, both, follow=True)
    assert "One version per model in one promotion: digits v1, v2" in refused.content.decode()
    root.post(VERSIONS, {**both, "confirm": "yes"}, follow=True)
    assert not Deployment.objects.exists()

    one = {"action": "promote_next", "_selected_action": [v1.pk]}
    page = root.post(VERSIONS, {**one, "environment": "staging"}).content.decode()
    assert "digits v1 → staging" in page and "Skips dev" in page
    no_reason = root.post(VERSIONS, {**one, "environment": "staging", "confirm": "yes"}, follow=True)
    assert "requires a written reason" in no_reason.content.decode()
    assert not Deployment.objects.exists()
    root.post(VERSIONS, {**one, "environment": "staging", "confirm": "yes", "reason": "dev is down"})
    assert live("staging") == 1
    event = RegistryEvent.objects.get(action="promote", environment="staging")
    assert (event.actor, event.reason) == ("root", "dev is down")


@pytest.mark.usefixtures("gates_pass")
def test_the_admin_confirms_a_rollback_and_says_when_there_is_nothing_to_go_back_to(
    demo_model_dir: Path,
) -> None:
    v1, v2 = register(demo_model_dir), register(demo_model_dir)
    model_version_promote(version=v1, environment="dev")
    served(v1)
    model_version_promote(version=v2, environment="dev")
    deployment = Deployment.objects.get(environment="dev")
    operator = admin(staff("view_deployment", "rollback_deployment"))
    action = {"action": "roll_back", "_selected_action": [deployment.pk]}

    page = operator.post(DEPLOYMENTS, action).content.decode()
    assert "Rolls back: digits v2 → digits v1" in page and "Live now: digits v2" in page
    assert live("dev") == 2  # nothing happens before the confirmation
    done = operator.post(DEPLOYMENTS, {**action, "confirm": "yes", "reason": "errors up"}, follow=True)
    assert "Rolled back in dev: digits v2 → digits v1" in done.content.decode()
    assert live("dev") == 1
    again = operator.post(DEPLOYMENTS, action).content.decode()
    assert "Nothing to go back to" in again
    operator.post(DEPLOYMENTS, {**action, "confirm": "yes"})
    assert live("dev") == 1  # never forward to the version just rolled back
    assert RegistryEvent.objects.get(action="rollback").reason == "errors up"


@pytest.mark.usefixtures("gates_pass")
def test_a_switch_acting_on_a_stale_view_of_what_is_live_is_refused(demo_model_dir: Path) -> None:
    """The registry records no deployment whose "previous" is not what the caller saw live:
    a promotion or rollback sent with `expect_live` after someone else switched changes nothing."""
    v1, v2, v3 = (register(demo_model_dir) for _ in range(3))
    model_version_promote(version=v1, environment="dev", expect_live=None)
    served(v1)
    with pytest.raises(LiveVersionChanged, match="v1 is live now, not nothing"):
        model_version_promote(version=v2, environment="dev", expect_live=None)
    model_version_promote(version=v2, environment="dev", expect_live=1)
    events = RegistryEvent.objects.count()

    # An operator looked when v1 was live; v2 is live now.
    with pytest.raises(
        LiveVersionChanged, match="digits in dev changed since you looked: v2 is live now, not v1"
    ):
        model_version_promote(version=v3, environment="dev", expect_live=1)
    with pytest.raises(LiveVersionChanged):
        deployment_rollback(model=v1.model, environment="dev", expect_live=1)
    assert (live("dev"), RegistryEvent.objects.count()) == (2, events)
    deployment = Deployment.objects.get(environment="dev")
    assert deployment.previous_version == v1

    root = Client()
    root.force_login(staff(superuser=True))
    stale = root.post(
        "/api/v1/models/digits/promote", {"version": 3, "expect_live": 1}, content_type="application/json"
    )
    assert stale.status_code == 409, stale.content
    assert stale.json()["error"]["code"] == "live_version_changed"
    stale = root.post(
        "/api/v1/models/digits/rollback",
        {"environment": "dev", "expect_live": 3},
        content_type="application/json",
    )
    assert stale.status_code == 409 and "not v3" in stale.json()["error"]["message"]
    with pytest.raises(CommandError, match="v2 is live now, not nothing"):
        call_command("promote", "digits", "3", "--to", "dev", "--expect-live", "none")
    assert live("dev") == 2
    call_command("rollback", "digits", "--env", "dev", "--expect-live", "2", stdout=io.StringIO())
    assert live("dev") == 1


@pytest.mark.usefixtures("gates_pass")
def test_the_admin_refuses_a_confirmation_made_on_a_page_that_is_out_of_date(demo_model_dir: Path) -> None:
    v1, v2, v3 = (register(demo_model_dir) for _ in range(3))
    model_version_promote(version=v1, environment="dev")
    root = admin(staff(superuser=True))
    promote = {"action": "promote_next", "_selected_action": [v3.pk]}
    page = root.post(VERSIONS, promote).content.decode()
    assert f'name="expect_live_{v3.pk}" value="1"' in page
    model_version_promote(version=v2, environment="dev")  # someone else, meanwhile
    done = root.post(VERSIONS, {**promote, "confirm": "yes", f"expect_live_{v3.pk}": "1"}, follow=True)
    assert "v2 is live now, not v1; nothing was changed" in done.content.decode()
    assert live("dev") == 2

    deployment = Deployment.objects.get(environment="dev")
    rollback = {"action": "roll_back", "_selected_action": [deployment.pk]}
    page = root.post(DEPLOYMENTS, rollback).content.decode()
    assert f'name="expect_live_{deployment.pk}" value="2"' in page
    model_version_promote(version=v3, environment="dev")
    done = root.post(
        DEPLOYMENTS, {**rollback, "confirm": "yes", f"expect_live_{deployment.pk}": "2"}, follow=True
    )
    assert "v3 is live now, not v2" in done.content.decode()
    assert live("dev") == 3
