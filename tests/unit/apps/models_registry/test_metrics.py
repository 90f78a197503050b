"""Rollout metrics (apps/models_registry/metrics.py) derived from the test database: rollouts
started and ended through the services (real gates), read back from prometheus_client's
default registry as Prometheus would, and over HTTP from the endpoint the platform worker serves.
No Redis: the analysis a rollout keeps is stored as `rollout_decide` stores it."""

import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pytest_django import Settings

from apps.models_registry.metrics import OUTCOMES, rollout_metrics_serve, rollout_metrics_update
from apps.models_registry.models import Rollout
from apps.models_registry.services.deployments import deployment_set
from apps.models_registry.services.rollouts import (
    Analysis,
    Side,
    rollout_abort,
    rollout_promote,
    rollout_roll_back,
    rollout_start,
)
from apps.models_registry.tasks import _serve_rollout_metrics, analyse_rollouts
from tests.conftest import free_port
from tests.unit.apps.models_registry.helpers import live_and_candidate, register

pytestmark = pytest.mark.django_db

PAIR = {"model": "digits", "environment": "dev"}


@pytest.fixture(autouse=True)
def storage(settings: Settings, tmp_path: Path) -> None:
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    settings.ARTIFACT_CACHE_DIR = tmp_path / "cache"


def _value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def _ended() -> dict[str, float | None]:
    return {o: _value("inference_rollouts_ended_total", **PAIR, outcome=o) for o in OUTCOMES}


def _analysis(*, agreement: float | None) -> dict[str, object]:
    candidate = Side(version=2, requests=120, error_rate=0.05, p99_s=0.012, mean_confidence=0.91)
    live = replace(candidate, version=1, requests=2300, error_rate=0.001, p99_s=0.004, mean_confidence=0.97)
    figures = Analysis("hold", candidate, live, waiting_for=0, dwell_left_s=12.0).as_dict()
    figures["candidate"]["agreement"] = agreement
    return figures


def test_a_running_canary_its_analysis_and_its_rollback(demo_model_dir: Path) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    rollout_metrics_update()
    # Exported from 0 before any rollout ended, so increase() sees the first.
    assert _ended() == dict.fromkeys(OUTCOMES, 0.0)
    prod = {"model": "digits", "environment": "prod", "outcome": "promoted"}
    assert _value("inference_rollouts_ended_total", **prod) is None  # nothing deployed there

    rollout = rollout_start(version=candidate, strategy="canary", environment="dev", dwell_s=0)
    rollout_metrics_update()
    running = {**PAIR, "candidate": "2"}
    assert _value("inference_rollout_weight_percent", **running, strategy="canary") == 5
    assert _value("inference_rollout_state", **running, state="running") == 1
    assert _value("inference_rollout_error_ratio", **running, side="candidate", version="2") is None

    Rollout.objects.filter(pk=rollout.pk).update(analysis=_analysis(agreement=0.875))
    rollout_metrics_update()
    sides = {
        "candidate": {"version": "2", "requests": 120, "error": 0.05, "p99": 0.012, "confidence": 0.91},
        "live": {"version": "1", "requests": 2300, "error": 0.001, "p99": 0.004, "confidence": 0.97},
    }
    for side, want in sides.items():
        labels = {**running, "side": side, "version": str(want["version"])}
        assert _value("inference_rollout_requests", **labels) == want["requests"]
        assert _value("inference_rollout_error_ratio", **labels) == want["error"]
        assert _value("inference_rollout_p99_seconds", **labels) == want["p99"]
        assert _value("inference_rollout_confidence_mean", **labels) == want["confidence"]
    assert _value("inference_rollout_agreement_ratio", **running) == 0.875

    # A canary has no agreement figure (None), and the step after an advance no analysis yet.
    Rollout.objects.filter(pk=rollout.pk).update(analysis=_analysis(agreement=None))
    rollout_metrics_update()
    assert _value("inference_rollout_agreement_ratio", **running) is None
    assert _value("inference_rollout_p99_seconds", **running, side="live", version="1") == 0.004

    ended = rollout_roll_back(rollout=rollout, reason="error rate 5.00% > 2.10%", actor="rollout-analysis")
    rollout_metrics_update()
    assert _value("inference_rollout_weight_percent", **running, strategy="canary") is None
    assert _value("inference_rollout_state", **running, state="running") is None
    assert _value("inference_rollout_p99_seconds", **running, side="live", version="1") is None
    assert _ended() == {"promoted": 0, "rolled_back": 1, "aborted": 0, "superseded": 0}
    assert ended.ended_at is not None
    stamp = _value("inference_rollout_last_ended_timestamp_seconds", **running, outcome="rolled_back")
    assert stamp == pytest.approx(ended.ended_at.timestamp())


def test_shadow_abort_promotion_and_supersede_each_counted_once(demo_model_dir: Path) -> None:
    first, candidate = live_and_candidate(demo_model_dir)
    shadow = rollout_start(version=candidate, strategy="shadow", environment="dev", mirror_percent=40)
    rollout_metrics_update()
    running = {**PAIR, "candidate": "2"}
    assert _value("inference_rollout_weight_percent", **running, strategy="shadow") == 40
    rollout_abort(rollout=shadow, reason="wrong candidate")

    canary = rollout_start(version=candidate, strategy="canary", environment="dev")
    rollout_promote(rollout=canary, actor="ops")
    third = register(demo_model_dir)
    rollout_start(version=third, strategy="canary", environment="dev")
    rollout_metrics_update()
    assert _value("inference_rollout_weight_percent", **PAIR, candidate="3", strategy="canary") == 5

    deployment_set(version=first, environment="dev")  # a switch outside the rollout ends it
    # The task the platform worker's beat runs (nothing running now: no Redis read) updates them.
    assert analyse_rollouts() == 0
    assert _ended() == {"promoted": 1, "rolled_back": 0, "aborted": 1, "superseded": 1}
    assert _value("inference_rollout_weight_percent", **PAIR, candidate="3", strategy="canary") is None
    for outcome, version in (("promoted", "2"), ("aborted", "2"), ("superseded", "3")):
        labels = {**PAIR, "candidate": version, "outcome": outcome}
        assert _value("inference_rollout_last_ended_timestamp_seconds", **labels), outcome

    port = free_port()
    served = rollout_metrics_serve(port=port, host="127.0.0.1")
    assert served is not None
    server, _ = served
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        sample = 'inference_rollouts_ended_total{environment="dev",model="digits",outcome="superseded"} 1.0'
        assert sample in text
        assert rollout_metrics_serve(port=port, host="127.0.0.1") is None  # taken: a warning, no crash
    finally:
        server.shutdown()
        server.server_close()


def test_only_the_platform_workers_child_serves_them(settings: Settings) -> None:
    settings.INFERENCE_WORKER_ROLE = "inference"
    assert _serve_rollout_metrics() is None
    settings.INFERENCE_WORKER_ROLE = "platform"
    settings.INFERENCE_PLATFORM_METRICS_PORT = port = free_port()
    settings.INFERENCE_WORKER_METRICS_HOST = "127.0.0.1"
    served = _serve_rollout_metrics()
    assert served is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            assert answer.status == 200 and b"# HELP" in answer.read()
    finally:
        served[0].shutdown()
        served[0].server_close()
