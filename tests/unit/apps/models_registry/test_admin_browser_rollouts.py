"""The admin's rollout pages driven in headless Chromium (#17): an operator starts a canary from
the versions' list through its form, watches its page (step, weight, the samples it waits for),
sees a step taken on the figures the workers record in Redis, and aborts through the button.
Screenshots are kept in test-artifacts/admin-rollout-*.png."""

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from pytest_django import Settings
from pytest_django.live_server_helper import LiveServer

from apps.models_registry.models import Deployment, RegistryEvent, Rollout
from apps.models_registry.services.deployments import deployment_set
from apps.models_registry.services.rollouts import rollout_decide
from tests.integration.conftest import ARTIFACTS_DIR
from tests.unit.apps.models_registry import test_admin_browser as flows
from tests.unit.apps.models_registry.helpers import figures_write, register, staff
from tests.unit.apps.models_registry.test_operator_flows import gates_pass  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the live server's thread reads what the test wrote
    pytest.mark.usefixtures("registry_settings", "gates_pass"),
]
# The promotion flows' Chromium (one per module), its pages and live server.
browser, page, server = flows.browser, flows.page, flows.server


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / f"admin-rollout-{name}.png"), full_page=True)


def test_an_operator_starts_a_canary_watches_a_step_and_aborts_it(
    page: Page,
    server: LiveServer,
    demo_model_dir: Path,
    registry_settings: Settings,
) -> None:
    live, candidate = register(demo_model_dir), register(demo_model_dir)
    deployment_set(version=live, environment="dev")
    flows.login(page, server, staff("promote_deployment", "rollback_deployment").username)

    flows.action_run(page, server, flows.VERSIONS, [str(candidate)], "start_rollout")
    expect(page.locator("h1")).to_have_text("Start a rollout of digits v2")
    expect(page.locator("#id_environment option:checked")).to_have_text("the next environment (dev)")
    expect(page.locator("#id_steps")).to_have_value("5, 25, 50, 100")
    page.fill("#id_steps", "10, 50, 100")
    page.fill("#id_dwell_s", "0")
    page.fill("#id_thresholds", '{"min_samples": 40}')
    page.fill("#id_reason", "v2 on a tenth first")
    screenshot(page, "start-form")
    assert not Rollout.objects.exists()  # nothing before the confirmation

    page.click("#confirm-rollout")
    assert "Started a canary rollout of digits v2 in dev." in flows.message(page, "success")
    rollout = Rollout.objects.get()
    expect(page).to_have_url(f"{server.url}/admin/models_registry/rollout/{rollout.pk}/change/")
    expect(page.locator("#rollout-state")).to_have_text("Running")
    expect(page.locator("#rollout-step")).to_contain_text("step 1 of 3")
    expect(page.locator("#rollout-step .current")).to_have_text("10 %")
    expect(page.locator("#rollout-weights")).to_contain_text("candidate 10 %, live 90 %")
    expect(page.locator("#rollout-log tbody tr")).to_have_count(1)
    expect(page.locator("#rollout-log")).to_contain_text("Rollout started")
    expect(page.locator("#rollout-log")).to_contain_text("v2 on a tenth first")

    # The platform worker's analysis, once, on what the workers recorded: too few samples yet.
    figures_write(1, requests=200)
    figures_write(2, requests=10)
    assert rollout_decide(rollout=rollout).decision == "wait"
    page.reload()  # the page also reloads itself every few seconds while the rollout runs
    expect(page.locator("#rollout-decision")).to_contain_text("Waits for 30 more samples")
    expect(page.locator("#rollout-figures")).to_contain_text("requests")
    expect(page.locator("#rollout-charts svg.sparkline")).to_have_count(4)
    screenshot(page, "running")

    figures_write(2, requests=40)
    assert rollout_decide(rollout=rollout).decision == "advance"
    # The page notices by itself: it reloads while nothing is being typed.
    expect(page.locator("#rollout-step")).to_contain_text("step 2 of 3", timeout=15_000)
    expect(page.locator("#rollout-step .current")).to_have_text("50 %")
    expect(page.locator("#rollout-weights")).to_contain_text("candidate 50 %, live 50 %")
    stepped = page.locator("#rollout-log tbody tr").nth(1)
    expect(stepped).to_contain_text("Rollout stepped")
    expect(stepped).to_contain_text("rollout-analysis")
    expect(stepped).to_contain_text("10 % → 50 %")
    expect(stepped).to_contain_text("candidate v2: 50 requests")
    screenshot(page, "after-step")

    page.fill("#id_reason_abort", "enough for today")  # typing holds the page's reload
    page.click("#rollout-abort input[type=submit]")
    assert "Aborted: digits v2 takes no more traffic; digits v1 stays live in dev." in flows.message(
        page, "success"
    )
    expect(page.locator("#rollout-state")).to_have_text("Aborted: enough for today")
    expect(page.locator("#rollout-abort")).to_have_count(0)  # no buttons on an ended rollout
    aborted = page.locator("#rollout-log tbody tr").nth(2)
    expect(aborted).to_contain_text("Rollout aborted")
    expect(aborted).to_contain_text("operator")
    expect(aborted).to_contain_text("enough for today")
    screenshot(page, "aborted")

    rollout.refresh_from_db()
    assert (rollout.state, rollout.step, rollout.reason) == ("aborted", 1, "enough for today")
    assert Deployment.objects.get(environment="dev").version == live
    abort = RegistryEvent.objects.get(action=RegistryEvent.Action.ROLLOUT_ABORT)
    assert (abort.actor, abort.reason, abort.details["rollout"]) == (
        "operator",
        "enough for today",
        rollout.pk,
    )
