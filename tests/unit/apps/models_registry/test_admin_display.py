"""What an operator reads in the registry admin (#20, items 8 and 9): the drift page's rows seen
and needed (published by the workers' own monitor code to a real Redis), times to the second,
deployments in pipeline order, who registered a version from the command line, metrics and
signature as tables, the outbox's word on a missing SNS topic, a chart legend clear of the bars,
and no "View site" link to a page the API does not have."""

import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import redis
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from apps.models_registry import drift
from apps.models_registry.admin import TIME_FORMAT, metric_value
from apps.models_registry.charts import bars_svg
from apps.models_registry.models import Deployment, ModelVersion, OutboxEvent, RegistryEvent
from apps.models_registry.services.deployments import deployment_rollback, model_version_promote
from tests.conftest import Heldout
from tests.unit.apps.models_registry.helpers import register, served, staff
from tests.unit.apps.models_registry.test_operator_flows import gates_pass  # noqa: F401 (fixture)
from workers.monitoring import DriftMonitor, SummaryPublisher

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]
ADMIN = "/admin/models_registry/"
SECONDS = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC")


def root_client() -> Client:
    client = Client()
    client.force_login(staff(superuser=True))
    return client


def text_of(html: str) -> str:
    """The page's words with tags dropped and white space collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def column(html: str, name: str) -> list[str]:
    """The cells of a changelist column, top to bottom."""
    cells = re.findall(rf'<(t[dh]) class="field-{name}(?: [^"]*)?">(.*?)</\1>', html, re.S)
    return [text_of(cell) for _, cell in cells]


def with_reference(version: ModelVersion, heldout: Heldout) -> np.ndarray:
    """Give `version` the reference statistics of the held-out digits; returns those rows."""
    rows, labels = np.asarray(heldout[0]), np.asarray(heldout[1])
    version.reference_stats = drift.reference_stats(rows, np.eye(10)[labels] * 0.9 + 0.01)
    version.save(update_fields=["reference_stats"])
    return rows


def test_the_drift_page_says_how_many_rows_each_window_has_seen_and_needs(
    demo_model_dir: Path, heldout: Heldout, registry_settings: Settings
) -> None:
    version = register(demo_model_dir)
    rows = with_reference(version, heldout)
    page_url = f"{ADMIN}modelversion/{version.pk}/drift/?environment=dev"
    client = root_client()

    # No worker has reported: nothing seen, and the minimum is this process's setting.
    registry_settings.INFERENCE_DRIFT_MIN_ROWS = 300
    empty = text_of(client.get(page_url).content.decode())
    assert "seen 0 of 300 rows needed: no worker has reported" in empty
    assert "No live window yet in dev" in empty

    # A worker (its real monitor and publisher) with 120 of its 200 rows: the worker's minimum.
    redis_client = redis.Redis.from_url(registry_settings.REDIS_URL)
    publish = SummaryPublisher(redis_client, environment="dev", worker_id="host-a:101")
    monitor = DriftMonitor(
        model="digits",
        version=version.number,
        reference=version.reference_stats or {},
        window=250,
        min_rows=200,
        eval_s=0,
        psi_threshold=0.2,
        publish=publish,
    )
    scores = np.eye(10)[np.arange(len(rows)) % 10] * 0.9 + 0.01
    monitor.observe(rows[:120], scores[:120])
    waiting = text_of(client.get(page_url).content.decode())
    assert "No live window yet in dev: seen 120 of 200 rows needed." in waiting
    assert "rows seen / needed for a window seen 120 of 200" in waiting
    assert "host-a:101 120 200 250 120 waiting: 120 of 200" in waiting  # the workers' table
    # Another environment's page counts only that environment's workers.
    assert "seen 0 of 300" in text_of(client.get(page_url.replace("dev", "staging")).content.decode())

    # 240 rows later its window (the last 250) is compared: the measures, with the counts.
    monitor.observe(rows[120:360], scores[120:360])
    ready = text_of(client.get(page_url).content.decode())
    assert "No live window yet" not in ready
    assert "live rows in the windows 250" in ready
    assert "rows seen / needed for a window seen 250 (200 needed)" in ready
    assert "host-a:101 250 200 250 360 compared" in ready

    # Two workers: each one's own count against its own minimum.
    second = SummaryPublisher(redis_client, environment="dev", worker_id="host-b:202")
    second(
        "digits",
        version.number,
        drift.WindowProgress(rows=40, seen=40, min_rows=200, window=250),
        None,
    )
    both = text_of(client.get(page_url).content.decode())
    assert "seen 250 (200 needed) (host-a:101); seen 40 of 200 (host-b:202)" in both


@pytest.mark.usefixtures("gates_pass")
def test_times_show_seconds_and_deployments_follow_the_pipeline(demo_model_dir: Path) -> None:
    v1, v2 = register(demo_model_dir), register(demo_model_dir)
    for environment in ("dev", "staging", "prod"):
        model_version_promote(version=v1, environment=environment)
    served(v1)
    model_version_promote(version=v2, environment="dev")
    deployment_rollback(model=v1.model, environment="dev", reason="v2 is slow")
    client = root_client()

    history = client.get(f"{ADMIN}registryevent/").content.decode()
    times = column(history, "created")
    assert times and all(SECONDS.fullmatch(t) for t in times), times
    rollback = RegistryEvent.objects.get(action="rollback")
    assert timezone.localtime(rollback.created_at).strftime(TIME_FORMAT) in times

    deployments = client.get(f"{ADMIN}deployment/").content.decode()
    assert column(deployments, "environment_column") == ["dev", "staging", "prod"]
    deployed = column(deployments, "deployed")
    assert len(deployed) == 3 and all(SECONDS.fullmatch(t) for t in deployed), deployed
    dev = Deployment.objects.get(environment="dev")
    assert timezone.localtime(dev.deployed_at).strftime(TIME_FORMAT) in deployed
    # Sorting by the environment column keeps the pipeline's order too.
    by_column = client.get(f"{ADMIN}deployment/?o=2").content.decode()
    assert column(by_column, "environment_column") == ["dev", "staging", "prod"]

    models = client.get(f"{ADMIN}registeredmodel/").content.decode()
    assert column(models, "live_versions") == ["dev: v1, staging: v1, prod: v1"]
    model_page = text_of(client.get(f"{ADMIN}registeredmodel/{v1.model.pk}/change/").content.decode())
    assert model_page.index(" dev digits v1") < model_page.index(" staging digits v1")
    assert model_page.index(" staging digits v1") < model_page.index(" prod digits v1")
    versions = client.get(f"{ADMIN}modelversion/").content.decode()
    assert column(versions, "environments") == ["-", "dev, staging, prod"]  # v2, v1
    assert all(SECONDS.fullmatch(t) for t in column(versions, "created"))


def test_a_version_registered_from_the_command_line_names_who_did(
    demo_model_dir: Path, settings: Settings
) -> None:
    call_command("register_model", str(demo_model_dir), "--actor", "alice@build-7", stdout=io.StringIO())
    version = ModelVersion.objects.get()
    assert version.created_by is None  # no account behind a command line
    client = root_client()
    listing = client.get(f"{ADMIN}modelversion/").content.decode()
    assert column(listing, "creator") == ["alice@build-7"]
    detail = text_of(client.get(f"{ADMIN}modelversion/{version.pk}/change/").content.decode())
    assert "Created by: alice@build-7" in detail and "Created by: -" not in detail

    # A version uploaded by an account shows that account.
    uploader = staff("add_modelversion")
    register(demo_model_dir, user=uploader)
    listing = client.get(f"{ADMIN}modelversion/").content.decode()
    assert column(listing, "creator") == ["operator", "alice@build-7"]


@pytest.mark.usefixtures("gates_pass")
def test_metrics_signature_and_artifacts_read_as_tables(demo_model_dir: Path) -> None:
    version = register(demo_model_dir)
    client = root_client()
    html = client.get(f"{ADMIN}modelversion/{version.pk}/change/").content.decode()
    assert '<th scope="row">validation_rows</th><td>360</td>' in html
    assert f'<th scope="row">accuracy</th><td>{version.metrics["accuracy"]:.4f}</td>' in html
    assert "360.0000" not in html and "&quot;validation_rows&quot;" not in html  # no raw JSON
    assert "field-metrics " not in html and 'field-signature"' not in html
    assert '<th scope="row">input pixels</th><td>FP32 [any, 64]</td>' in html
    assert '<th scope="row">output scores</th><td>FP32 [any, 10]</td>' in html
    assert '<th scope="row">class names</th><td>0, 1, 2, 3, 4, 5, 6, 7, 8, 9</td>' in html
    for artifact in version.artifacts.all():
        assert f'<span style="word-break: break-all">{artifact.uri}</span>' in html
        assert f'<code style="word-break: break-all">{artifact.sha256}</code>' in html
    # The promote page's metrics: integers as integers.
    promote = client.post(
        f"{ADMIN}modelversion/", {"action": "promote_next", "_selected_action": [version.pk]}
    ).content.decode()
    assert "<td>validation_rows</td><td>360</td>" in promote and "360.0000" not in promote
    assert [metric_value(v) for v in (360, 0.96388, 1.0, None, True)] == [
        "360",
        "0.9639",
        "1.0000",
        "-",
        "True",
    ]


@pytest.mark.usefixtures("gates_pass")
def test_the_outbox_says_when_no_sns_topic_is_configured(demo_model_dir: Path, settings: Settings) -> None:
    settings.RELEASE_SNS_TOPIC_ARNS = {}
    model_version_promote(version=register(demo_model_dir), environment="dev")
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 1
    client = root_client()
    html = client.get(f"{ADMIN}outboxevent/").content.decode()
    assert column(html, "published") == [
        "not published: no SNS topic configured for dev (RELEASE_SNS_TOPIC_ARNS)"
    ]
    assert "No SNS topic configured for dev, staging, prod (RELEASE_SNS_TOPIC_ARNS)" in text_of(html)

    settings.RELEASE_SNS_TOPIC_ARNS = {"dev": "arn:aws:sns:eu-west-1:123456789012:release-dev.fifo"}
    html = client.get(f"{ADMIN}outboxevent/").content.decode()
    assert column(html, "published") == ["pending"]
    assert "No SNS topic configured for staging, prod (RELEASE_SNS_TOPIC_ARNS)" in text_of(html)
    settings.RELEASE_SNS_TOPIC_ARNS = dict.fromkeys(["dev", "staging", "prod"], "arn:aws:sns:x:1:t")
    assert "No SNS topic configured" not in client.get(f"{ADMIN}outboxevent/").content.decode()


def test_the_chart_legend_sits_outside_the_bars() -> None:
    """Class 7 tallest (the bar the legend used to cover): every legend box ends above the top
    of the tallest bar, and the chart's bars all lie below it."""
    validation = [0.1] * 10
    live = [0.05] * 10
    live[7] = 0.55
    svg = bars_svg([("validation", validation), ("live", live)], [str(i) for i in range(10)], title="classes")
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    legend = root.findall("s:g[@class='legend']/s:rect", ns)
    bars = [r for r in root.findall("s:rect", ns) if r.find("s:title", ns) is not None]
    assert len(legend) == 2 and len(bars) == 20
    bars_top = min(float(r.attrib["y"]) for r in bars)
    assert bars_top == pytest.approx(float(bars[10 + 7].attrib["y"]))  # live's class 7
    for box in legend:
        assert float(box.attrib["y"]) + float(box.attrib["height"]) < bars_top
    legend_texts = root.findall("s:g[@class='legend']/s:text", ns)
    assert all(float(t.attrib["y"]) < bars_top for t in legend_texts)


def test_the_admin_header_names_the_platform_and_links_to_no_missing_site() -> None:
    html = root_client().get("/admin/").content.decode()
    assert "Keras inference platform" in html
    assert "View site" not in html


@pytest.mark.usefixtures("gates_pass")
def test_event_and_outbox_pages_show_their_times_once_with_seconds(demo_model_dir: Path) -> None:
    model_version_promote(version=register(demo_model_dir), environment="dev")
    client = root_client()
    event = RegistryEvent.objects.get(action="promote")
    page = text_of(client.get(f"{ADMIN}registryevent/{event.pk}/change/").content.decode())
    assert f"Created at: {timezone.localtime(event.created_at).strftime(TIME_FORMAT)}" in page
    outbox = OutboxEvent.objects.get()
    page = text_of(client.get(f"{ADMIN}outboxevent/{outbox.pk}/change/").content.decode())
    assert page.count("Published at:") == 1
    assert f"Created at: {timezone.localtime(outbox.created_at).strftime(TIME_FORMAT)}" in page


def test_the_rollouts_page_says_what_the_next_decision_waits_for(demo_model_dir: Path) -> None:
    from apps.models_registry.models import Rollout
    from apps.models_registry.services.deployments import deployment_set

    live, candidate = register(demo_model_dir), register(demo_model_dir)
    deployment = deployment_set(version=live, environment="dev")
    rollout = Rollout.objects.create(
        model=live.model,
        environment="dev",
        candidate=candidate,
        baseline=deployment.version,
        strategy="canary",
        steps=[5, 25, 50, 100],
        step_started_at=timezone.now(),
        analysis={"decision": "wait", "waiting_for": 37},
    )
    client = root_client()
    page = client.get(f"{ADMIN}rollout/").content.decode()
    assert "waits for 37 more samples" in page and "5 %" in page
    assert client.get(f"{ADMIN}rollout/{rollout.pk}/change/").status_code == 200
