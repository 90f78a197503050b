"""The admin's rollout pages (#17) through Django's test client, on the test database and a real
Redis: the "Start a rollout…" form and its refusals, the live page (step, weights, the latest
analysis' figures beside what is allowed, charts from the per-version figures the workers write,
the decision log), its buttons calling the services with the user and reason, the permissions
of each, and a page that still renders while Redis is unreachable."""

import re
import time
import xml.etree.ElementTree as ET
from html import unescape
from pathlib import Path

import pytest
import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from pytest_django import Settings

from apps.models_registry.models import Deployment, ModelVersion, RegistryEvent, Rollout
from apps.models_registry.rollout_page import rollout_charts, rollout_figures
from apps.models_registry.services.rollouts import ANALYSIS_DEFAULTS, rollout_decide, rollout_start
from apps.models_registry.sparklines import sparkline_svg
from inference_common.version_stats import BUCKET_S, version_stats_record, version_stats_series
from tests.conftest import free_port
from tests.unit.apps.models_registry.helpers import figures_write, live_and_candidate, staff
from tests.unit.apps.models_registry.test_operator_flows import gates_pass  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("registry_settings", "gates_pass"),
]
VERSIONS = "/admin/models_registry/modelversion/"
ROLLOUTS = "/admin/models_registry/rollout/"
PROMOTE, ROLLBACK = "promote_deployment", "rollback_deployment"


def text_of(html: str) -> str:
    """The page's words with tags dropped and white space collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def client_of(user: object) -> Client:
    client = Client()
    client.force_login(user)  # type: ignore[arg-type]
    return client


def start_form(client: Client, version: ModelVersion, **fields: object) -> "object":
    """POST the start action: without `fields` its form, with them confirmed."""
    data: dict[str, object] = {"action": "start_rollout", "_selected_action": [version.pk]}
    if fields:
        data = {
            **data,
            "confirm": "yes",
            "strategy": "canary",
            "steps": "5, 25, 50, 100",
            "mirror_percent": "100",
            "dwell_s": "60",
            **fields,
        }
    return client.post(VERSIONS, data, follow=True)


def page_of(client: Client, rollout: Rollout) -> str:
    response = client.get(f"{ROLLOUTS}{rollout.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_start_form_offers_the_next_environment_and_starts_a_canary(demo_model_dir: Path) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    operator = client_of(staff(PROMOTE))

    form = text_of(start_form(operator, candidate).content.decode())  # type: ignore[attr-defined]
    assert "Start a rollout of digits v2" in form
    assert "the next environment (dev)" in form
    assert "dev digits v1 staging nothing prod nothing" in form  # what is live where
    assert "min_samples 100" in form  # the thresholds it would get
    assert not Rollout.objects.exists()  # nothing before the confirmation

    done = start_form(
        operator,
        candidate,
        steps="10, 50, 100",
        dwell_s="30",
        thresholds='{"min_samples": 20}',
        reason="v2 on a tenth first",
    )
    rollout = Rollout.objects.get()
    assert done.redirect_chain == [(f"{ROLLOUTS}{rollout.pk}/change/", 302)]  # type: ignore[attr-defined]
    assert "Started a canary rollout of digits v2 in dev." in done.content.decode()  # type: ignore[attr-defined]
    assert (rollout.environment, rollout.steps, rollout.dwell_s, rollout.thresholds, rollout.started_by) == (
        "dev",
        [10, 50, 100],
        30.0,
        {"min_samples": 20.0},
        "operator",
    )
    started = RegistryEvent.objects.get(action=RegistryEvent.Action.ROLLOUT_START)
    assert (started.actor, started.reason) == ("operator", "v2 on a tenth first")


def test_a_shadow_starts_with_its_mirror_percent(demo_model_dir: Path) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    operator = client_of(staff(PROMOTE))
    start_form(operator, candidate, strategy="shadow", mirror_percent="30", steps="")
    rollout = Rollout.objects.get()
    assert (rollout.strategy, rollout.mirror_percent, rollout.steps) == ("shadow", 30, [0])
    rollout_decide(rollout=rollout)  # nothing recorded yet: it waits
    page = text_of(page_of(operator, rollout))
    assert "one step (shadow)" in page
    assert "a copy of 30 % of the live requests goes to the candidate" in page
    assert "Waits for 100 more samples" in page
    assert "shadow agreement (top-1) - - ≥ 90%" in page  # a shadow's row, before the analysis has it


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"thresholds": '{"p50": 1}'}, "Nothing started. digits v2: thresholds: unknown thresholds ['p50']"),
        ({"steps": "10, 50"}, "digits v2: steps: percentages in 1..100, increasing, ending at 100"),
        ({"environment": "staging"}, "Nothing started: digits v2 has not gone through dev"),
        ({"strategy": "shadow", "mirror_percent": "0"}, "digits v2: mirror_percent: a percentage in 1..100"),
        ({"thresholds": "[1, 2]"}, "a JSON object"),  # the form's own check
        ({"thresholds": "{nope"}, "not JSON"),
        ({"steps": "ten, 100"}, "whole percentages separated by commas"),
    ],
)
def test_a_refused_start_is_said_on_the_page_and_nothing_starts(
    demo_model_dir: Path, fields: dict[str, str], said: str
) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    page = start_form(client_of(staff(PROMOTE)), candidate, **fields).content.decode()  # type: ignore[attr-defined]
    assert said in unescape(page)
    assert "Run the gates and start the rollout" in page  # the form again, values kept
    assert not Rollout.objects.exists()
    assert not RegistryEvent.objects.filter(action=RegistryEvent.Action.ROLLOUT_START).exists()


def test_a_failed_gate_is_said_and_nothing_starts(
    demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.models_registry.services import deployments, gates

    def failed(*, version: object, environment: str) -> gates.GateReport:
        return gates.GateReport(results=[gates.GateResult("metric", False, "accuracy 0.5 < 0.9")])

    monkeypatch.setattr(deployments, "gates_run", failed)
    _, candidate = live_and_candidate(demo_model_dir)
    page = text_of(start_form(client_of(staff(PROMOTE)), candidate, reason="try").content.decode())  # type: ignore[attr-defined]
    assert "Gate failed, nothing started. digits v2 was not rolled out to dev" in page
    assert not Rollout.objects.exists()
    assert RegistryEvent.objects.filter(action=RegistryEvent.Action.GATE_FAILED).exists()


def test_starting_needs_one_version_and_the_promote_permission(demo_model_dir: Path) -> None:
    live, candidate = live_and_candidate(demo_model_dir)
    both = client_of(staff(PROMOTE)).post(
        VERSIONS, {"action": "start_rollout", "_selected_action": [live.pk, candidate.pk]}, follow=True
    )
    assert "A rollout is of one version: select one." in both.content.decode()

    reader_account = get_user_model().objects.create_user("reader", password="x", is_staff=True)
    reader_account.user_permissions.set(Permission.objects.filter(codename=ROLLBACK))
    reader = client_of(reader_account)
    changelist = reader.get(VERSIONS).content.decode()
    assert "start_rollout" not in changelist  # the action is not offered
    start_form(reader, candidate, reason="sneaky")
    assert not Rollout.objects.exists()


def test_the_page_shows_the_step_the_figures_waiting_and_the_decision_log(
    demo_model_dir: Path, registry_settings: Settings
) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(
        version=candidate, strategy="canary", environment="dev", dwell_s=0, thresholds={"min_samples": 50}
    )
    viewer = client_of(staff())  # any staff may read it
    fresh = text_of(page_of(viewer, rollout))
    assert "step 1 of 4: 5 % → 25 % → 50 % → 100 %" in fresh
    assert "candidate 5 %, live 95 % of the traffic not pinned to a version" in fresh
    assert "Not analysed yet" in fresh
    assert "Rollout started system 5 % → 25 % → 50 % → 100 %, dwell 0.0 s" in fresh

    # In the rollout's first bucket: a whole one by the time the page shows it, never the one
    # still filling (the charts leave that out).
    started = rollout.created_at.timestamp()
    figures_write(1, requests=200, at=started)
    figures_write(2, requests=20, latency_s=0.004, at=started)
    assert rollout_decide(rollout=rollout).decision == "wait"
    html = page_of(viewer, rollout)
    waiting = text_of(html)
    assert "Waits for 30 more samples: the candidate's requests in this step, 50 needed" in waiting
    assert "requests 20 200 ≥ 50 in the step before any decision" in waiting
    assert "error rate 0.00% 0.00% ≤ live + 2.00%" in waiting
    assert "p99 latency (worker) 5.0 ms 2.5 ms ≤ 3 times live (and up to live + 5 ms)" in waiting
    assert "mean top-1 confidence 0.900 0.900 ≥ 0.8 times live" in waiting
    assert "shadow agreement" not in waiting  # a canary's analysis has none
    charts = re.findall(r'<svg [^>]*class="sparkline".*?</svg>', html, re.S)
    assert [re.search(r'aria-label="([^"]+)"', c).group(1) for c in charts] == [  # type: ignore[union-attr]
        "requests/s",
        "error rate",
        "p99 latency, ms",
        "mean top-1 confidence",
    ]
    for chart in charts:
        ET.fromstring(chart)  # well-formed SVG
    assert "candidate v2: 0.9" in html and "live v1: 0.9" in html  # legends with the last value

    figures_write(2, requests=40)
    assert rollout_decide(rollout=rollout).decision == "advance"
    stepped = text_of(page_of(viewer, rollout))
    assert "step 2 of 4" in stepped and "candidate 25 %, live 75 %" in stepped
    assert "Not analysed yet" in stepped  # a new step starts a new window
    assert "Rollout stepped rollout-analysis 5 % → 25 % within thresholds" in stepped
    assert "candidate v2: 60 requests, errors 0.00%, p99 5.0 ms, confidence 0.900" in stepped
    assert "live v1: 200 requests" in stepped


def test_a_breach_is_marked_and_the_rollback_logged_with_its_figures(
    demo_model_dir: Path, registry_settings: Settings
) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(
        version=candidate, strategy="canary", environment="dev", thresholds={"min_samples": 20}
    )
    figures_write(1, requests=100, latency_s=0.002)
    figures_write(2, requests=30, latency_s=0.5)
    assert rollout_decide(rollout=rollout).decision == "roll_back"
    rollout.refresh_from_db()
    html = page_of(client_of(staff(PROMOTE, ROLLBACK)), rollout)
    page = text_of(html)
    assert "Rolled back: p99 latency 500.0 ms > 7.5 ms (live 2.5 ms)" in page
    assert 'class="breached"><th scope="row">p99 latency (worker)' in html
    assert "Rollout rolled back rollout-analysis" in page
    assert "breach: p99 latency 500.0 ms > 7.5 ms" in page
    assert 'id="rollout-advance"' not in html and 'id="rollout-abort"' not in html  # it has ended
    assert "window.location.reload" not in html  # an ended rollout's page stays still


def test_the_buttons_call_their_services_with_the_user_and_the_reason(demo_model_dir: Path) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(version=candidate, strategy="canary", environment="dev", steps=[50, 100])
    operator = client_of(staff(PROMOTE, ROLLBACK))
    url = f"{ROLLOUTS}{rollout.pk}"
    page = page_of(operator, rollout)
    for button in ("rollout-advance", "rollout-promote", "rollout-abort"):
        assert f'id="{button}"' in page
    assert "window.location.reload" in page  # a running rollout's page reloads itself

    advanced = operator.post(f"{url}/advance/", {"reason": "looks fine"}, follow=True)
    assert "Advanced to step 2 of 2: digits v2 takes 100 %." in advanced.content.decode()
    rollout.refresh_from_db()
    assert rollout.step == 1
    step = RegistryEvent.objects.get(action=RegistryEvent.Action.ROLLOUT_STEP)
    assert (step.actor, step.reason) == ("operator", "looks fine")

    promoted = operator.post(f"{url}/promote/", {"reason": "ship it"}, follow=True)
    assert "Promoted: digits v2 is now live in dev." in promoted.content.decode()
    assert Deployment.objects.get(environment="dev").version == candidate
    event = RegistryEvent.objects.get(action=RegistryEvent.Action.ROLLOUT_PROMOTE)
    assert (event.actor, event.reason) == ("operator", "ship it")

    again = text_of(operator.post(f"{url}/abort/", {"reason": "late"}, follow=True).content.decode())
    assert f"Nothing changed: rollout {rollout.pk} has ended (promoted)" in again
    assert not RegistryEvent.objects.filter(action=RegistryEvent.Action.ROLLOUT_ABORT).exists()


def test_abort_stops_the_candidate_and_says_live_stays(demo_model_dir: Path) -> None:
    live, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(version=candidate, strategy="shadow", environment="dev")
    operator = client_of(staff(ROLLBACK))
    aborted = operator.post(f"{ROLLOUTS}{rollout.pk}/abort/", {"reason": "wrong build"}, follow=True)
    page = text_of(aborted.content.decode())
    assert "Aborted: digits v2 takes no more traffic; digits v1 stays live in dev." in page
    assert "Aborted: wrong build" in page  # the state line
    assert "Rollout aborted operator wrong build" in page
    rollout.refresh_from_db()
    assert (rollout.state, rollout.reason) == ("aborted", "wrong build")
    assert Deployment.objects.get(environment="dev").version == live


@pytest.mark.parametrize(
    ("perms", "allowed"),
    [
        ((PROMOTE,), {"advance", "promote"}),
        ((ROLLBACK,), {"abort"}),
        ((), set()),
    ],
)
def test_a_button_needs_its_permission_hidden_and_403_without(
    demo_model_dir: Path, perms: tuple[str, ...], allowed: set[str]
) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(version=candidate, strategy="canary", environment="dev")
    user = client_of(staff(*perms))
    page = page_of(user, rollout)
    acts = {"advance", "promote", "abort"}
    assert {act for act in acts if f'id="rollout-{act}"' in page} == allowed
    for act in acts - allowed:
        assert user.post(f"{ROLLOUTS}{rollout.pk}/{act}/", {"reason": "x"}).status_code == 403
    rollout.refresh_from_db()
    assert (rollout.state, rollout.step) == ("running", 0)
    assert user.get(f"{ROLLOUTS}{rollout.pk}/abort/").status_code == 405  # POST only
    assert Client().post(f"{ROLLOUTS}{rollout.pk}/abort/").status_code == 302  # to the login page
    assert Rollout.objects.get().state == "running"


def test_the_page_renders_while_redis_is_unreachable(
    demo_model_dir: Path, registry_settings: Settings
) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(version=candidate, strategy="canary", environment="dev")
    registry_settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    page = text_of(page_of(client_of(staff(PROMOTE)), rollout))
    assert "Charts unavailable: Redis is unreachable" in page
    assert "step 1 of 4" in page and "Rollout started" in page


def test_the_charts_of_a_running_rollout_leave_out_the_bucket_still_filling(
    demo_model_dir: Path, registry_settings: Settings
) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(version=candidate, strategy="canary", environment="dev")
    started = rollout.created_at.timestamp() // BUCKET_S * BUCKET_S  # its first bucket's start
    figures_write(2, requests=10, at=started)  # 2 requests/s over 5 s
    figures_write(2, requests=50, at=started + BUCKET_S)
    client = redis.Redis.from_url(registry_settings.REDIS_URL)
    requests_chart = rollout_charts(rollout=rollout, client=client, now=started + BUCKET_S + 1)[0]
    assert "candidate v2: 2" in requests_chart and "live v1: 0" in requests_chart
    assert "<polyline" not in requests_chart  # one whole bucket so far: a dot per line
    later = rollout_charts(rollout=rollout, client=client, now=started + 2 * BUCKET_S + 1)[0]
    assert "candidate v2: 10" in later and "<polyline" in later


def test_the_figures_read_what_an_analysis_has_and_dash_what_it_lacks() -> None:
    analysis = {
        "candidate": {"requests": 300, "error_rate": 0.01, "agreement": 0.875, "mean_abs_diff": 0.0125},
        "live": {"requests": 310, "p99_s": 60.0, "p99_beyond_buckets": True, "pairs": 0},
        "breaches": ["shadow agreement 87.5% < 90.0%"],
    }
    rows = {
        row.name: row for row in rollout_figures(analysis=analysis, limits=ANALYSIS_DEFAULTS, shadow=True)
    }
    assert (rows["requests"].candidate, rows["requests"].live) == ("300", "310")
    assert (rows["error rate"].candidate, rows["error rate"].live) == ("1.00%", "-")
    assert rows["p99 latency (worker)"].live == "beyond 60000.0 ms"  # stored as the largest bound
    pairs = rows["pairs compared with live's"]  # a shadow's, even before the analysis has them
    assert (pairs.candidate, pairs.live) == ("-", "0")
    assert "input drift (largest PSI)" not in rows  # no drift window on either side
    assert rows["mean top-1 confidence"].candidate == "-"
    agreement = rows["shadow agreement (top-1)"]
    assert (agreement.candidate, agreement.allowed, agreement.breached) == ("87.50%", "≥ 90%", True)
    assert rows["mean absolute difference"].candidate == "0.0125"
    assert rows["mean absolute difference"].allowed == "-"  # no threshold of that name (yet)
    assert not rows["error rate"].breached
    assert rollout_figures(analysis={}, limits=ANALYSIS_DEFAULTS, shadow=False)[0].candidate == "-"


def test_the_series_has_a_bucket_every_five_seconds_empty_ones_as_zeros(registry_settings: Settings) -> None:
    client = redis.Redis.from_url(registry_settings.REDIS_URL)
    start = (time.time() // BUCKET_S - 10) * BUCKET_S
    for offset, requests in ((0, 4), (2 * BUCKET_S + 1, 6), (2 * BUCKET_S + 3, 1)):
        version_stats_record(
            client,
            environment="dev",
            model="digits",
            version=3,
            requests=requests,
            errors=1,
            rows=requests,
            latency_s=0.01,
            confidence_sum=0.5 * requests,
            confidence_rows=requests,
            now=start + offset,
        )
    series = version_stats_series(
        client, environment="dev", model="digits", version=3, since=start + 1, now=start + 3 * BUCKET_S
    )
    assert [t for t, _ in series] == [start + i * BUCKET_S for i in range(4)]
    assert [s.requests for _, s in series] == [4, 0, 7, 0]
    assert [s.errors for _, s in series] == [1, 0, 2, 0]
    third = series[2][1]
    assert (third.mean_confidence, third.p99_s, third.latency_count) == (0.5, 0.01, 7)
    assert series[1][1].p99_s is None and series[1][1].mean_confidence is None


def test_a_sparkline_breaks_at_gaps_and_escapes_its_words() -> None:
    svg = sparkline_svg(
        [("candidate <v2>", [1.0, None, 3.0, 4.0]), ("live", [None, None, None, None])],
        title="p99 & more",
        marks=[0.5],
    )
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.get("aria-label") == "p99 & more"
    assert len(root.findall(f"{ns}polyline")) == 1 and len(root.findall(f"{ns}circle")) == 1
    assert "candidate <v2>: 4" in "".join(root.itertext()) and "live: -" in "".join(root.itertext())
    assert len(root.findall(f"{ns}line")) == 1  # the step's mark
