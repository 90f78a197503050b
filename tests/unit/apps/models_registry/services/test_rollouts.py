"""Rollouts through the registry's services, with real Redis and the real gate subprocess: a
canary's steps to promotion, what each records and publishes, the analysis on figures the
workers record (inference_common.version_stats), abort and a promotion that supersedes."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from apps.models_registry import selectors
from apps.models_registry.models import Deployment, OutboxEvent, RegistryEvent, Rollout
from apps.models_registry.services.deployments import PromotionRefused, deployment_set, model_version_promote
from apps.models_registry.services.rollouts import (
    ANALYSIS_DEFAULTS,
    RolloutRefused,
    Side,
    _breaches,
    rollout_abort,
    rollout_advance,
    rollout_analyse,
    rollout_decide,
    rollout_roll_back,
    rollout_start,
)
from inference_common.version_stats import LATENCY_BOUNDS, version_stats_add
from tests.unit.apps.models_registry.helpers import figures_write, live_and_candidate, register, staff

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


def _payloads(action: str) -> list[dict[str, object]]:
    return [e.payload for e in OutboxEvent.objects.order_by("created_at") if e.payload["action"] == action]


def test_a_canary_steps_to_promotion_recording_and_publishing_each_step(demo_model_dir: Path) -> None:
    live, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(version=candidate, strategy="canary", environment="dev", actor="ops")
    assert (rollout.state, rollout.step, rollout.weight, rollout.steps) == ("running", 0, 5, [5, 25, 50, 100])
    (started,) = _payloads("rollout_start")
    assert (started["version"], started["previous_version"]) == (2, 1)
    assert started["rollout"] == {
        "rollout": rollout.pk,
        "strategy": "canary",
        "step": 0,
        "weight": 5,
        "mirror_percent": 0,
        "state": "running",
        "steps": [5, 25, 50, 100],
        "dwell_s": rollout.dwell_s,
        "thresholds": started["rollout"]["thresholds"],  # type: ignore[index]
        "gates": started["rollout"]["gates"],  # type: ignore[index]
    }
    with pytest.raises(RolloutRefused, match="already running"):
        rollout_start(version=candidate, strategy="shadow", environment="dev")

    for weight in (25, 50, 100):
        rollout = rollout_advance(rollout=rollout, actor="ops")
        assert rollout.weight == weight
    assert [p["rollout"]["weight"] for p in _payloads("rollout_step")] == [25, 50, 100]  # type: ignore[index]
    assert Deployment.objects.get(environment="dev").version == live  # live moves only at promotion

    rollout = rollout_advance(rollout=rollout, actor="ops")
    assert rollout.state == "promoted"
    deployment = Deployment.objects.get(environment="dev")
    assert (deployment.version, deployment.previous_version) == (candidate, live)
    promote = RegistryEvent.objects.filter(action=RegistryEvent.Action.PROMOTE, to_version=2).get()
    assert promote.details["rollout"] == rollout.pk
    assert len(_payloads("rollout_promote")) == 1 and _payloads("promote")[-1]["version"] == 2
    history = [e.action for e in selectors.registry_history(model=candidate.model)]
    assert history[:6] == [
        "promote",
        "rollout_promote",
        "rollout_step",
        "rollout_step",
        "rollout_step",
        "rollout_start",
    ]
    with pytest.raises(RolloutRefused, match="has ended"):
        rollout_advance(rollout=rollout)


def test_a_rollout_is_refused_without_a_live_version_or_with_bad_steps(demo_model_dir: Path) -> None:
    first = register(demo_model_dir)
    with pytest.raises(RolloutRefused, match="nothing of digits is live"):
        rollout_start(version=first, strategy="canary", environment="dev")
    deployment_set(version=first, environment="dev")
    with pytest.raises(RolloutRefused, match="already live"):
        rollout_start(version=first, strategy="canary", environment="dev")
    second = register(demo_model_dir)
    with pytest.raises(ValidationError, match="ending at 100"):
        rollout_start(version=second, strategy="canary", environment="dev", steps=[10, 50])
    with pytest.raises(ValidationError, match="unknown thresholds"):
        rollout_start(version=second, strategy="canary", environment="dev", thresholds={"p50": 1})
    with pytest.raises(RolloutRefused, match="has not gone through dev"):
        rollout_start(version=second, strategy="canary", environment="staging")
    assert not Rollout.objects.exists()


def test_a_failed_gate_is_recorded_and_nothing_starts(demo_model_dir: Path) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    candidate.model.gate_minimum = 0.999
    candidate.model.save()
    with pytest.raises(PromotionRefused, match="was not rolled out to dev: metric") as refused:
        rollout_start(version=candidate, strategy="canary", environment="dev", actor="ops")
    assert refused.value.report is not None and not refused.value.report.passed
    failed = RegistryEvent.objects.get(action=RegistryEvent.Action.GATE_FAILED)
    assert (failed.version, failed.actor, failed.reason) == (candidate, "ops", "canary rollout")
    assert not Rollout.objects.exists() and not _payloads("rollout_start")


def test_the_analysis_waits_for_samples_then_advances_or_rolls_back(demo_model_dir: Path) -> None:
    live, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(
        version=candidate, strategy="canary", environment="dev", dwell_s=0, thresholds={"min_samples": 50}
    )
    figures_write(1, requests=200)
    figures_write(2, requests=20)
    waiting = rollout_analyse(rollout=rollout)
    assert (waiting.decision, waiting.waiting_for) == ("wait", 30)

    figures_write(2, requests=40)
    assert rollout_decide(rollout=rollout).decision == "advance"
    rollout.refresh_from_db()
    assert rollout.weight == 25 and rollout.analysis == {}  # a new step starts a new window

    rollout.step_started_at = timezone.now() - timedelta(seconds=1)
    rollout.save()
    figures_write(2, requests=60, errors=30)
    verdict = rollout_decide(rollout=rollout)
    assert verdict.decision == "roll_back" and "error rate" in verdict.breaches[0]
    rollout.refresh_from_db()
    assert rollout.state == "rolled_back" and "error rate" in rollout.reason
    event = RegistryEvent.objects.filter(action=RegistryEvent.Action.ROLLOUT_ROLLBACK).get()
    # Windows count whole 5 s buckets: this one also holds the 60 requests of the step before.
    assert event.actor == "rollout-analysis" and event.details["figures"]["candidate"]["requests"] >= 60
    assert _payloads("rollout_rollback")[0]["rollout"]["state"] == "rolled_back"  # type: ignore[index]
    assert Deployment.objects.get(environment="dev").version == live


def test_a_ten_times_slower_candidate_is_rolled_back(demo_model_dir: Path) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(
        version=candidate, strategy="canary", environment="dev", dwell_s=0, thresholds={"min_samples": 50}
    )
    figures_write(1, requests=100, latency_s=0.004)
    figures_write(2, requests=100, latency_s=0.04)
    verdict = rollout_decide(rollout=rollout)
    assert verdict.decision == "roll_back" and verdict.breaches[0].startswith("p99")


def test_a_p99_past_the_largest_bucket_is_valid_json_and_a_breach(demo_model_dir: Path) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(
        version=candidate, strategy="canary", environment="dev", dwell_s=0, thresholds={"min_samples": 50}
    )
    figures_write(1, requests=100, latency_s=0.004)
    figures_write(2, requests=100, latency_s=LATENCY_BOUNDS[-2] * 2)  # past every finite bound
    analysis = rollout_analyse(rollout=rollout)
    figures = json.loads(json.dumps(analysis.as_dict(), allow_nan=False))
    assert figures["candidate"]["p99_s"] == LATENCY_BOUNDS[-2] and figures["candidate"]["p99_beyond_buckets"]
    assert figures["live"]["p99_s"] == 0.005 and not figures["live"]["p99_beyond_buckets"]
    assert analysis.decision == "roll_back" and analysis.breaches[0].startswith(
        "p99 latency beyond 60000.0 ms"
    )
    rollout_decide(rollout=rollout)
    rollout.refresh_from_db()
    assert rollout.state == "rolled_back" and rollout.reason.startswith("p99 latency beyond")


def test_abort_needs_the_rollback_permission_and_a_promotion_supersedes(demo_model_dir: Path) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(version=candidate, strategy="shadow", environment="dev")
    assert (rollout.weight, rollout.mirror_percent, rollout.steps) == (0, 100, [0])
    with pytest.raises(PermissionDenied):
        rollout_abort(rollout=rollout, user=staff("promote_deployment"))
    aborted = rollout_abort(rollout=rollout, reason="wrong candidate")
    assert (aborted.state, aborted.reason) == ("aborted", "wrong candidate")

    again = rollout_start(version=candidate, strategy="canary", environment="dev")
    model_version_promote(version=candidate, environment="dev")
    again.refresh_from_db()
    assert again.state == "aborted" and again.reason.startswith("superseded")


def test_an_operator_rolls_back_or_advances_to_promotion_with_the_matching_permission(
    demo_model_dir: Path,
) -> None:
    _, candidate = live_and_candidate(demo_model_dir)
    promoter = staff("promote_deployment")
    rollout = rollout_start(version=candidate, strategy="canary", environment="dev", steps=[100])
    with pytest.raises(PermissionDenied):
        rollout_roll_back(rollout=rollout, reason="slow", user=promoter)
    rolled_back = rollout_roll_back(rollout=rollout, reason="slow", actor="ops")
    assert (rolled_back.state, rolled_back.reason) == ("rolled_back", "slow")
    event = RegistryEvent.objects.get(action=RegistryEvent.Action.ROLLOUT_ROLLBACK)
    assert (event.actor, event.reason, event.details["state"]) == ("ops", "slow", "rolled_back")
    with pytest.raises(RolloutRefused, match="has ended"):
        rollout_abort(rollout=rollout)

    # A shadow's only step: advancing promotes, in the same locked transaction, once.
    shadow = rollout_start(version=candidate, strategy="shadow", environment="dev")
    promoted = rollout_advance(rollout=shadow, user=promoter)
    assert (promoted.state, promoted.reason) == ("promoted", "promoted")
    assert Deployment.objects.get(environment="dev").version == candidate
    assert len(_payloads("rollout_promote")) == 1 and not _payloads("rollout_step")
    assert RegistryEvent.objects.filter(action=RegistryEvent.Action.PROMOTE, to_version=2).count() == 1


def _pairs(version: int, *, rows: int, agreeing: int) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    pipe = client.pipeline(transaction=False)
    fields: dict[str, float] = {"pair_rows": rows, "pair_class_rows": rows, "pair_agree_rows": agreeing}
    version_stats_add(pipe, environment="dev", model="digits", version=version, fields=fields)
    pipe.execute()


def test_a_shadow_waits_for_compared_pairs_and_rolls_back_on_disagreement(demo_model_dir: Path) -> None:
    """A confident, error-free, as fast candidate that disagrees with live: only agreement says so."""
    _, candidate = live_and_candidate(demo_model_dir)
    rollout = rollout_start(
        version=candidate, strategy="shadow", environment="dev", dwell_s=600, thresholds={"min_samples": 50}
    )
    figures_write(1, requests=100)
    figures_write(2, requests=100)
    _pairs(2, rows=20, agreeing=20)
    waiting = rollout_analyse(rollout=rollout)
    assert (waiting.decision, waiting.waiting_for, waiting.candidate.pairs) == ("wait", 30, 20)
    _pairs(2, rows=80, agreeing=20)
    verdict = rollout_decide(rollout=rollout)
    assert verdict.candidate.agreement == 0.4
    assert verdict.decision == "roll_back" and verdict.breaches == ["shadow agreement 40.0% < 90.0%"]
    rollout.refresh_from_db()
    assert rollout.state == "rolled_back" and rollout.analysis["candidate"]["agreement"] == 0.4


def test_drift_figures_breach_only_past_lives_by_the_threshold() -> None:
    limits = {**ANALYSIS_DEFAULTS}

    def side(version: int, input_psi: float | None = None, prediction_psi: float | None = None) -> Side:
        return Side(
            version=version,
            requests=100,
            error_rate=0.0,
            p99_s=0.005,
            mean_confidence=0.9,
            input_psi_max=input_psi,
            prediction_psi=prediction_psi,
        )

    live = side(1, 0.1, 0.05)
    close = side(2, 0.3, 0.2)
    shifted = side(2, 0.1, 0.6)
    unknown = side(2)
    assert _breaches(close, live, limits) == []
    assert _breaches(unknown, live, limits) == []
    assert _breaches(shifted, live, limits) == ["prediction shift (PSI) 0.600 > 0.300 (live 0.050)"]
