"""The workers' drift monitor, its Redis windows and the admin's report built from them."""

from typing import Any, TypeAlias

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY

from apps.models_registry import drift
from apps.models_registry.models import ModelVersion, RegisteredModel
from apps.models_registry.selectors import drift_report_get
from workers.monitoring import DriftMonitor, SummaryPublisher
from workers.training.digits import dataset_split

# The training rows, the validation rows and the reference statistics of the validation set.
Digits: TypeAlias = tuple[np.ndarray, np.ndarray, dict[str, Any]]


@pytest.fixture(scope="module")
def digits() -> Digits:
    train, validation, _, y_validation = dataset_split(seed=0)
    scores = np.eye(10)[y_validation] * 0.9 + 0.01
    return train, validation, drift.reference_stats(validation, scores)


def sample(name: str, version: str) -> float:
    """The metric's current value for the monitored model's version; it must have been exported."""
    value = REGISTRY.get_sample_value(name, {"model": "monitored", "version": version})
    assert value is not None, f"{name} has no sample for version {version}"
    return value


def monitor_of(
    reference: dict[str, Any], *, version: int, window: int, min_rows: int, publish: Any
) -> DriftMonitor:
    return DriftMonitor(
        model="monitored",
        version=version,
        reference=reference,
        window=window,
        min_rows=min_rows,
        eval_s=0,
        psi_threshold=0.2,
        publish=publish,
    )


def test_monitor_reports_after_min_rows_and_flags_a_shift(digits: Digits) -> None:
    train, _, reference = digits
    published = []
    monitor = monitor_of(
        reference,
        version=1,
        window=300,
        min_rows=200,
        publish=lambda model, version, progress, s: published.append((progress, s)),
    )
    labels = np.arange(len(train)) % 10
    scores = np.eye(10)[labels] * 0.9 + 0.01
    assert monitor.observe(train[:100], scores[:100]) is None  # below min_rows: no measures yet
    # ... but how full the window is, and what it needs, is published.
    assert published == [(drift.WindowProgress(rows=100, seen=100, min_rows=200, window=300), None)]
    measures = monitor.observe(train[100:400], scores[100:400])
    assert measures is not None and measures["rows"] == 300
    assert published[-1][0] == drift.WindowProgress(rows=300, seen=400, min_rows=200, window=300)
    assert sample("inference_drift_input_psi_max", "1") == pytest.approx(measures["input_psi_max"])
    assert sample("inference_drift_input_psi_max", "1") < drift.ALERT_PSI
    assert sample("inference_drift_input_features_drifted", "1") == 0
    assert published[-1][1] is not None and published[-1][1]["rows"] == 300
    shifted = monitor.observe(16 - train[400:700], scores[400:700])
    assert shifted is not None and shifted["input_psi_max"] > drift.ALERT_PSI
    assert sample("inference_drift_input_features_drifted", "1") > 10
    assert sample("inference_drift_out_of_range_share", "1") == 1.0
    assert sample("inference_input_out_of_range_total", "1") >= 300


@pytest.mark.django_db
def test_admin_report_adds_up_fresh_worker_windows(digits: Digits, redis_server: str) -> None:
    train, _, reference = digits
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    model = RegisteredModel.objects.create(name="monitored")
    version = ModelVersion.objects.create(model=model, number=2, signature={}, reference_stats=reference)
    assert drift_report_get(version=version, environment="dev", client=client).measures is None
    scores = np.eye(10)[np.arange(300) % 10] * 0.9 + 0.01
    for worker, rows in (("w1", train[:150]), ("w2", train[150:300])):
        publish = SummaryPublisher(client, environment="dev", worker_id=worker)
        monitor = monitor_of(reference, version=2, window=150, min_rows=10, publish=publish)
        monitor.observe(rows, scores[:150])
    report = drift_report_get(version=version, environment="dev", client=client)
    assert report.workers == 2 and report.summary is not None and report.summary["rows"] == 300
    assert report.measures is not None and report.findings == []
    # A window older than a minute (a worker that stopped) is left out.
    key = drift.SUMMARY_KEY.format(environment="dev", model="monitored", version=2)
    client.hset(key, "w3", b'{"rows": 5, "at": 0}')
    assert drift_report_get(version=version, environment="dev", client=client).workers == 2


def test_an_idle_window_is_published_again_before_its_keys_expire(
    digits: Digits, redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No rows since the last evaluation: nothing is recomputed, but the last publication is
    repeated every REPUBLISH_S (within the keys' minute), so an idle worker stays on the page."""
    from workers import monitoring

    train, _, reference = digits
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    publish = SummaryPublisher(client, environment="dev", worker_id="idle")
    monitor = monitor_of(reference, version=3, window=100, min_rows=80, publish=publish)
    monitor.observe(train[:50], None)
    key = drift.PROGRESS_KEY.format(environment="dev", model="monitored", version=3)
    first = client.hget(key, "idle")
    assert first is not None and b'"rows":50' in first and b'"min_rows":80' in first
    assert monitor.evaluate_if_due() is None
    assert client.hget(key, "idle") == first  # within REPUBLISH_S: no write
    monkeypatch.setattr(monitoring, "REPUBLISH_S", 0.0)
    assert monitor.evaluate_if_due() is None
    again = client.hget(key, "idle")
    assert again is not None and again != first and b'"rows":50' in again  # a new "at", same window
