"""Observability against a real platform: Debian's Prometheus scraping the API and the worker,
the alert rules evaluated on drift, JSON logs linking API and worker, Flower's API, and the
admin's drift page in headless Chromium."""

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, Heldout, free_port
from tests.integration.conftest import (
    ARTIFACTS_DIR,
    Platform,
    admin_login,
    browser_page,
    platform_env,
    running_platform,
)
from workers.training.digits import dataset_split

RULES = ROOT / "deploy" / "prometheus" / "rules" / "inference.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "inference.json"
DRIFT_ALERTS = {"InferenceInputDrift", "InferencePredictionShift", "InferenceOutOfRangeInputs"}


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Platform]:
    """A platform of its own: one worker child (one drift window), small windows evaluated every
    second, no Prometheus of its own (the test starts one with the rules it needs)."""
    root = tmp_path_factory.mktemp("observed")
    env = platform_env(
        root,
        demo_model_dir,
        WORKER_CONCURRENCY="1",
        START_PROMETHEUS="false",
        INFERENCE_DRIFT_WINDOW="300",
        INFERENCE_DRIFT_MIN_ROWS="200",
        INFERENCE_DRIFT_EVAL_S="1",
        # Flower's task list is off by default (CPU): this platform turns it on to check it.
        CELERY_WORKER_SEND_TASK_EVENTS="true",
    )
    with running_platform(root, env, "observability") as platform:
        yield platform


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def firing(self) -> set[str]:
        alerts = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def eventually(check: Any, *, timeout: float = 30, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.fixture(scope="module")
def prometheus(observed: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Debian's Prometheus on loopback scraping the API and the worker every second, with the
    deploy/prometheus rules as written except `for:` set to 0s (they would wait 5-10 minutes)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Debian's prometheus is required (make test installs it)")
    folder = tmp_path_factory.mktemp("prometheus")
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    (folder / "rules.yml").write_text(yaml.safe_dump(rules))
    api = observed.base_url.removeprefix("http://")
    worker = f"127.0.0.1:{observed.env['WORKER_METRICS_PORT']}"
    platform = f"127.0.0.1:{observed.env['INFERENCE_PLATFORM_METRICS_PORT']}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(folder / "rules.yml")],
        "scrape_configs": [
            {"job_name": "inference-api", "static_configs": [{"targets": [api]}]},
            {"job_name": "inference-worker", "static_configs": [{"targets": [worker]}]},
            {"job_name": "inference-platform", "static_configs": [{"targets": [platform]}]},
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("wb"),
    )
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        ready = eventually(lambda: _answers(f"{server.url}/-/ready"), timeout=30)
        assert ready, (folder / "prometheus.log").read_text()[-2000:]
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def predict(platform: Platform, rows: np.ndarray, **headers: str) -> httpx.Response:
    with platform.client() as client:
        response = client.post(
            "/api/v1/predictions", json={"model": "digits", "inputs": rows.tolist()}, headers=headers
        )
    assert response.status_code == 200, response.text
    return response


def stream(platform: Platform, rows: np.ndarray, per_request: int = 20) -> None:
    for start in range(0, len(rows), per_request):
        predict(platform, rows[start : start + per_request])


def test_prometheus_scrapes_request_counter_and_latency(
    observed: Platform, prometheus: Prometheus, heldout: Heldout
) -> None:
    rows = np.array(heldout[0][:30])
    for row in rows:
        predict(observed, row[None, :])
    counted = 'sum(inference_requests_total{model="digits", route="api/v1/predictions", status="200"})'
    assert eventually(lambda: (prometheus.value(counted) or 0) >= 30)
    buckets = 'inference_request_duration_seconds_bucket{model="digits"}'
    # p99 since start from the cumulative buckets (a rate() would be 0 here: all 30 requests came
    # before the series' first scrape).
    p99 = prometheus.value(f"histogram_quantile(0.99, sum by (le) ({buckets}))")
    assert p99 is not None and 0 < p99 < 5
    answered = 'sum(inference_worker_requests_total{model="digits", outcome="ok"})'
    assert eventually(lambda: (prometheus.value(answered) or 0) >= 30)
    assert (prometheus.value('sum(inference_batch_size_count{model="digits"})') or 0) >= 1
    assert prometheus.value('max(inference_model_serving_workers{model="digits", role="live"})') == 1
    assert prometheus.value('inference_queue_depth{model="digits"}') is not None
    assert prometheus.value('count(inference_model_loaded{model="digits", version="1"} == 1)') == 1
    # Each target's first scrape comes at its own offset within the interval, after Prometheus
    # synced its targets: wait for all three rather than read `up` once.
    every_job = {"inference-api": "1", "inference-worker": "1", "inference-platform": "1"}

    def up() -> dict[str, str]:
        return {r["metric"]["job"]: r["value"][1] for r in prometheus.query("up")}

    eventually(lambda: up() == every_job, timeout=60)
    assert up() == every_job


def _json_lines(log: str) -> list[dict[str, Any]]:
    """The JSON records in the platform's output, where each line is `<process> | <line>`."""
    lines = []
    for line in log.splitlines():
        _, _, text = line.partition(" | ")
        if text.startswith("{"):
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                continue
    return lines


def test_json_logs_link_api_and_worker_by_request_id(observed: Platform, heldout: Heldout) -> None:
    response = predict(observed, np.array(heldout[0][:2]), **{"X-Request-ID": "client-trace-42"})
    request_id = response.headers["X-Request-ID"]
    assert request_id == response.json()["id"]

    def lines_of_request() -> list[dict[str, Any]]:
        return [line for line in _json_lines(observed.log()) if line.get("request_id") == request_id]

    assert eventually(lambda: len(lines_of_request()) >= 2, timeout=10)
    by_service = {line["service"]: line for line in lines_of_request()}
    api, worker = by_service["api"], by_service["worker-digits"]
    for line in (api, worker):
        assert {"timestamp", "level", "model", "version", "status"} <= set(line)
        assert (line["model"], line["version"], line["level"]) == ("digits", 1, "INFO")
    assert (api["status"], api["route"], api["client_request_id"]) == (
        200,
        "api/v1/predictions",
        "client-trace-42",
    )
    assert api["latency_ms"] > 0
    assert worker["status"] == "ok" and worker["queue_wait_ms"] >= 0 and worker["inference_ms"] > 0
    assert re.fullmatch(r".+:\d+", worker["worker"])
    # Every line the API and workers write parses as JSON (the banner and Celery's start-up
    # picture are the launcher's and Celery's own prints, not log records).
    records = _json_lines(observed.log())
    assert {"api", "worker-digits", "worker-platform"} <= {line["service"] for line in records}
    # Elasticsearch's index template maps every field the request lines carry.
    template = json.loads((ROOT / "deploy" / "elk" / "index-template.json").read_text())
    mapped = set(template["template"]["mappings"]["properties"])
    assert set(api) | set(worker) <= mapped, (set(api) | set(worker)) - mapped


def test_flower_lists_the_worker_with_readable_tasks(observed: Platform) -> None:
    flower = f"http://127.0.0.1:{observed.env['FLOWER_PORT']}"
    user, password = observed.env["FLOWER_BASIC_AUTH"].split(":")
    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
    auth = (user, password)

    def digits_worker() -> dict[str, Any] | None:
        workers = httpx.get(f"{flower}/api/workers", params={"refresh": 1}, auth=auth, timeout=20).json()
        return next((w for name, w in workers.items() if name.startswith("digits@")), None)

    worker = eventually(digits_worker, timeout=30, every=2)
    assert worker is not None, "Flower does not list the digits worker"
    assert [q["name"] for q in worker["active_queues"]] == ["inference.digits"]
    with observed.client() as client:  # a batch of one request of one row, at least
        answer = client.post("/api/v1/predictions", json={"model": "digits", "inputs": [[0.0] * 64]})
        assert answer.status_code == 200, answer.text
    time.sleep(1)  # the task events reach Flower
    tasks = httpx.get(f"{flower}/api/tasks", params={"limit": 20}, auth=auth, timeout=10).json()
    names = {t["name"] for t in tasks.values()}
    assert "inference.predict_batch" in names
    args = [t["args"] for t in tasks.values() if t["name"] == "inference.predict_batch"]
    assert all(re.fullmatch(r"\(digits v1, (1 request|\d+ requests), (1 row|\d+ rows)\)", a) for a in args), (
        args[:3]
    )
    assert not any(re.search(r"\b1 requests|\b1 rows", a) for a in args), args[:3]

    # The Broker tab reads the queues through kombu's own Redis transport (deploy/bin/flower).
    broker = httpx.get(f"{flower}/broker", auth=auth, timeout=10)
    assert broker.status_code == 200, broker.text[:300]
    assert "redis://" in broker.text and '<tr id="inference.digits">' in broker.text, broker.text[:500]


def _drift_page(platform: Platform, name: str) -> str:
    with browser_page() as page:
        admin_login(page, platform)
        page.goto(f"{platform.base_url}/admin/models_registry/modelversion/")
        page.locator("tr", has_text="digits v1").get_by_text("live vs reference").click()
        page.wait_for_selector("#drift-findings")
        assert page.locator("svg").count() >= 3
        page.screenshot(path=str(ARTIFACTS_DIR / name), full_page=True)
        findings: str = page.locator("#drift-findings").inner_text()
        return findings


def test_drift_alerts_stay_quiet_in_distribution_and_fire_on_a_shifted_stream(
    observed: Platform, prometheus: Prometheus, heldout: Heldout
) -> None:
    train, _, _, _ = dataset_split(seed=0)  # rows the reference (validation set) does not contain
    rng = np.random.default_rng(7)

    def monitored() -> bool:
        predict(observed, np.array(heldout[0][:5]))
        return prometheus.value('inference_drift_reference_confidence_mean{model="digits"}') is not None

    # The reference statistics are computed on the platform worker after registration; the
    # worker's monitor starts once they exist.
    assert eventually(monitored, timeout=90, every=2), "the worker never started its drift monitor"

    stream(observed, train[rng.choice(len(train), 600, replace=False)])
    rows = 'inference_drift_window_rows{model="digits", version="1"}'
    assert eventually(lambda: (prometheus.value(rows) or 0) >= 200)
    time.sleep(4)  # a few evaluations of the window and of the rules
    psi = prometheus.value('inference_drift_input_psi_max{model="digits", version="1"}')
    assert psi is not None and psi < 0.25
    assert not prometheus.firing() & DRIFT_ALERTS, prometheus.firing()
    assert "No drift" in _drift_page(observed, "admin-drift-in-distribution.png")

    inverted = 16.0 - train[rng.choice(len(train), 600, replace=False)]  # negatives of the digits
    stream(observed, inverted)
    fired = eventually(lambda: prometheus.firing() >= DRIFT_ALERTS, timeout=30)
    assert fired, prometheus.firing()
    findings = _drift_page(observed, "admin-drift-shifted.png")
    assert "input drift" in findings and "predicted classes shifted" in findings


def test_dashboard_and_rules_use_only_exported_metrics(observed: Platform, prometheus: Prometheus) -> None:
    """Every inference_* metric the Grafana dashboard and the alert rules query is one the API, the
    worker or the platform worker actually exports: a series Prometheus scraped (after the traffic
    of the tests above), or a family a target declares (`# TYPE`) whose series exist only while
    something is happening (a running rollout's weight, its latest analysis)."""
    targets = httpx.get(f"{prometheus.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert {t["labels"]["job"] for t in targets if t["health"] == "up"} == {
        "inference-api",
        "inference-worker",
        "inference-platform",
    }, targets
    names = set(httpx.get(f"{prometheus.url}/api/v1/label/__name__/values", timeout=10).json()["data"])
    for target in targets:
        text = httpx.get(target["scrapeUrl"], timeout=10).text
        for declared in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
            name, kind = declared
            names.add(name)
            if kind == "counter":
                names.add(f"{name}_total")
    used = set(re.findall(r"\binference_[a-z0-9_]+", DASHBOARD.read_text() + RULES.read_text()))
    assert used, "no inference_* metric found in the dashboard and rules"
    assert "inference_rollout_p99_seconds" in used  # names with digits are read whole
    exported = names | {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}
    missing = sorted(name for name in used if name not in exported)
    assert not missing, f"queried but never exported: {missing}"


def test_make_run_starts_prometheus_scraping_api_and_worker(platform: Platform) -> None:
    url = f"http://127.0.0.1:{platform.env['PROMETHEUS_PORT']}"
    if shutil.which("prometheus") is None:
        pytest.fail("Debian's prometheus is required (make test installs it)")

    def healthy() -> dict[str, str]:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in targets}

    health = eventually(lambda: (h := healthy()).get("inference-worker") == "up" and h, timeout=30)
    assert health and health["inference-api"] == "up" and health["inference-worker"] == "up", healthy()
    rules = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert {"inference-serving", "inference-drift"} <= {g["name"] for g in rules}
    assert "Prometheus http://127.0.0.1:" in platform.log()


def test_flower_lists_the_workers_with_task_events_off_by_default(platform: Platform) -> None:
    assert "CELERY_WORKER_SEND_TASK_EVENTS" not in platform.env
    flower = f"http://127.0.0.1:{platform.env['FLOWER_PORT']}"
    user, password = platform.env["FLOWER_BASIC_AUTH"].split(":")
    auth = (user, password)

    def digits_worker() -> dict[str, Any] | None:
        workers = httpx.get(f"{flower}/api/workers", params={"refresh": 1}, auth=auth, timeout=20).json()
        return next((w for name, w in workers.items() if name.startswith("digits@")), None)

    worker = eventually(digits_worker, timeout=30, every=2)
    assert worker is not None and [q["name"] for q in worker["active_queues"]] == ["inference.digits"]
    with platform.client() as client:
        assert (
            client.post("/api/v1/predictions", json={"model": "digits", "inputs": [[0.0] * 64]}).status_code
            == 200
        )
    time.sleep(1)
    assert httpx.get(f"{flower}/api/tasks", params={"limit": 20}, auth=auth, timeout=10).json() == {}
