"""The registry admin's promotion and rollback flows driven in headless Chromium (#20): the real
admin pages served by pytest-django's live server, each flow checked on the page and in the
registry it leaves behind (deployments, history with reason and actor). Screenshots are kept in
test-artifacts/admin-flow-*.png."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.models_registry.models import Deployment, ModelVersion, RegistryEvent
from apps.models_registry.services.deployments import deployment_rollback, model_version_promote
from tests.integration.conftest import ARTIFACTS_DIR, browser_page
from tests.unit.apps.models_registry.helpers import register, served, staff
from tests.unit.apps.models_registry.test_operator_flows import gates_pass  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the live server's thread reads what the test wrote
    pytest.mark.usefixtures("registry_settings", "gates_pass"),
]
VERSIONS = "/admin/models_registry/modelversion/"
DEPLOYMENTS = "/admin/models_registry/deployment/"
PASSWORD = "x"  # helpers.staff's


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module; each test gets a page of its own (own cookies)."""
    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API keeps its event loop set as this thread's running loop while the
        # browser is open, so Django would refuse the test's own queries as if they came from
        # async code. They do not: the loop only ever runs inside Playwright's calls.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with browser_page() as first:
            yield first.context.browser


@pytest.fixture
def server(django_db_setup: None, live_server: LiveServer) -> LiveServer:
    """pytest-django's live server, started once the test database is set up: `--postgres` points
    the database settings at PostgreSQL only then (tests/conftest.py), and a live server started
    before would keep serving its thread the in-memory SQLite it found."""
    return live_server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def login(page: Page, server: LiveServer, username: str) -> None:
    page.goto(f"{server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(username)


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / f"admin-flow-{name}.png"), full_page=True)


def row(page: Page, text: str) -> Locator:
    """The changelist row with a cell (or link) that reads exactly `text` ("digits v1", not "v10")."""
    return page.locator("#result_list tbody tr").filter(has=page.get_by_text(text, exact=True))


def action_run(page: Page, server: LiveServer, changelist: str, rows: list[str], action: str) -> None:
    """On `changelist`, tick the rows naming each of `rows`, choose `action`, press Go."""
    page.goto(f"{server.url}{changelist}")
    for text in rows:
        expect(row(page, text)).to_have_count(1)
        row(page, text).locator("input.action-select").check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def message(page: Page, level: str) -> str:
    """The admin's message of `level` (error, success, ...) on the page after an action, as the
    page writes it (the admin capitalises the first letter: "Digits v1 is now live in dev.")."""
    found = page.locator(f".messagelist li.{level}")
    expect(found).to_have_count(1)
    return (found.text_content() or "").strip()


def live(environment: str) -> int | None:
    deployment = Deployment.objects.filter(environment=environment).select_related("version").first()
    return deployment.version.number if deployment else None


def promote_page(page: Page, server: LiveServer, version: ModelVersion, environment: str = "") -> None:
    """The promote action's confirmation page for `version`, `environment` chosen in its list."""
    action_run(page, server, VERSIONS, [str(version)], "promote_next")
    expect(page.locator("#confirm-promote")).to_be_visible()
    if environment:
        page.select_option("#id_environment", environment)  # the page reloads with that target
        expect(page.locator("fieldset h2")).to_have_text(f"{version} → {environment}")


def test_two_versions_of_one_model_are_refused_naming_both(
    page: Page, server: LiveServer, demo_model_dir: Path
) -> None:
    register(demo_model_dir)
    register(demo_model_dir)
    login(page, server, staff(superuser=True).username)

    action_run(page, server, VERSIONS, ["digits v1", "digits v2"], "promote_next")
    refused = message(page, "error")
    screenshot(page, "bulk-two-versions-refused")
    assert "One version per model in one promotion: digits v1, v2" in refused
    assert "Nothing was promoted" in refused
    expect(page.locator("#confirm-promote")).to_have_count(0)  # no confirmation page offered
    assert not Deployment.objects.exists()
    assert not RegistryEvent.objects.filter(action=RegistryEvent.Action.PROMOTE).exists()


def test_a_skip_is_flagged_refused_without_a_reason_and_recorded_with_one(
    page: Page, server: LiveServer, demo_model_dir: Path
) -> None:
    v1 = register(demo_model_dir)  # never in dev
    login(page, server, staff(superuser=True).username)

    promote_page(page, server, v1)
    expect(page.locator("fieldset h2")).to_have_text("digits v1 → dev")  # the next one by default
    expect(page.locator("p.skip")).to_have_count(0)
    page.select_option("#id_environment", "staging")
    expect(page.locator("fieldset h2")).to_have_text("digits v1 → staging")
    expect(page.locator("p.skip")).to_contain_text("Skips dev: a written reason is required")
    screenshot(page, "promote-skip-confirm")
    assert live("staging") is None  # nothing happens before the confirmation

    page.click("#confirm-promote")  # no reason
    refused = message(page, "error")
    screenshot(page, "promote-skip-without-reason-refused")
    assert "skipping dev to reach staging requires a written reason" in refused
    assert not Deployment.objects.exists()

    promote_page(page, server, v1, "staging")
    page.fill("#id_reason", "dev is down for the day")
    page.click("#confirm-promote")
    done = message(page, "success")
    screenshot(page, "promote-skip-with-reason-done")
    assert "Digits v1 is now live in staging." in done
    assert live("staging") == 1 and live("dev") is None
    event = RegistryEvent.objects.get(action=RegistryEvent.Action.PROMOTE)
    assert (event.environment, event.from_version, event.to_version, event.actor, event.reason) == (
        "staging",
        None,
        1,
        "root",
        "dev is down for the day",
    )


def test_an_operator_may_not_skip_even_with_a_reason(
    page: Page, server: LiveServer, demo_model_dir: Path
) -> None:
    v1 = register(demo_model_dir)
    login(page, server, staff("promote_deployment").username)

    promote_page(page, server, v1, "staging")
    expect(page.locator("p.skip")).to_contain_text("Skips dev: only a superuser may")
    screenshot(page, "promote-skip-operator-confirm")
    page.fill("#id_reason", "I am sure")
    page.click("#confirm-promote")
    refused = message(page, "error")
    assert "skipping dev to reach staging requires a superuser" in refused
    assert not Deployment.objects.exists()
    assert not RegistryEvent.objects.filter(action=RegistryEvent.Action.PROMOTE).exists()

    promote_page(page, server, v1)  # the next environment needs no superuser
    page.click("#confirm-promote")
    assert "Digits v1 is now live in dev." in message(page, "success")
    assert live("dev") == 1
    assert RegistryEvent.objects.get(action=RegistryEvent.Action.PROMOTE).actor == "operator"


def rollback_confirm(page: Page, server: LiveServer) -> None:
    action_run(page, server, DEPLOYMENTS, ["dev"], "roll_back")
    expect(page.locator("#confirm-rollback")).to_be_visible()


def test_rollback_twice_goes_back_twice_then_says_there_is_nothing_left(
    page: Page, server: LiveServer, demo_model_dir: Path
) -> None:
    for version in [register(demo_model_dir) for _ in range(3)]:
        model_version_promote(version=version, environment="dev")
        served(version)  # a worker loaded it: only a version that served is gone back to
    login(page, server, staff(superuser=True).username)

    for step, (current, target, reason) in enumerate(
        [(3, 2, "v3 answers slowly"), (2, 1, "v2 misreads sevens")], start=1
    ):
        rollback_confirm(page, server)
        plan = page.locator("#content").inner_text()
        assert f"Live now: digits v{current}" in plan
        assert f"Rolls back: digits v{current} → digits v{target}" in plan
        assert live("dev") == current  # nothing happens before the confirmation
        page.fill("#id_reason", reason)
        screenshot(page, f"rollback-{step}-confirm")
        page.click("#confirm-rollback")
        done = message(page, "success")
        assert f"Rolled back in dev: digits v{current} → digits v{target}" in done
        assert live("dev") == target

    rollback_confirm(page, server)  # v3 and v2 were rolled back out: never forward to them
    plan = page.locator("#content").inner_text()
    assert "Live now: digits v1" in plan
    assert "Nothing to go back to" in plan and "Rolls back:" not in plan
    screenshot(page, "rollback-3-nothing-to-go-back-to")
    page.click("#confirm-rollback")
    refused = message(page, "error")
    screenshot(page, "rollback-3-refused")
    assert "Digits has nothing to roll back to in dev" in refused
    assert live("dev") == 1

    rollbacks = RegistryEvent.objects.filter(action=RegistryEvent.Action.ROLLBACK).order_by(
        "created_at", "id"
    )
    assert [(e.from_version, e.to_version, e.actor, e.reason) for e in rollbacks] == [
        (3, 2, "root", "v3 answers slowly"),
        (2, 1, "root", "v2 misreads sevens"),
    ]


def test_a_version_rolled_back_out_of_dev_is_offered_dev_again_not_staging(
    page: Page, server: LiveServer, demo_model_dir: Path
) -> None:
    v1, v2 = register(demo_model_dir), register(demo_model_dir)
    model_version_promote(version=v1, environment="dev")
    served(v1)
    model_version_promote(version=v2, environment="dev")
    deployment_rollback(model=v1.model, environment="dev", reason="v2 misreads sevens")
    login(page, server, staff(superuser=True).username)

    promote_page(page, server, v2)
    expect(page.locator("fieldset h2")).to_have_text("digits v2 → dev")
    expect(page.locator("p.skip")).to_have_count(0)
    assert "Live in dev now: digits v1" in page.locator("#content").inner_text()
    screenshot(page, "promote-after-rollback-confirm")
    promote_page(page, server, v1)  # v1 is live in dev again: it goes on to staging
    expect(page.locator("fieldset h2")).to_have_text("digits v1 → staging")

    promote_page(page, server, v2)
    page.fill("#id_reason", "fixed the sevens")
    page.click("#confirm-promote")
    assert "Digits v2 is now live in dev." in message(page, "success")
    assert live("dev") == 2 and live("staging") is None
    again = (
        RegistryEvent.objects.filter(action=RegistryEvent.Action.PROMOTE)
        .order_by("-created_at", "-id")
        .first()
    )
    assert again is not None
    assert (again.environment, again.from_version, again.to_version, again.actor, again.reason) == (
        "dev",
        1,
        2,
        "root",
        "fixed the sevens",
    )
