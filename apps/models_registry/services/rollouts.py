"""Rollouts: a candidate version takes an environment's traffic step by step (canary) or is shown
a copy of it (shadow), and is promoted or rolled back on what the analysis measures.

    rollout_start    gates, as for a promotion → running at step 0; workers load the candidate
    rollout_advance  the next step (the last one promotes)
    rollout_promote  the candidate becomes live (a promotion, expecting what was live at start)
    rollout_roll_back / rollout_abort   the candidate stops taking traffic; live never changed

Every one of them is recorded in the history and written to the release outbox in its own
transaction, like promotions. The analysis (`rollout_analyse`) runs on the platform worker every
INFERENCE_ROLLOUT_ANALYSIS_S and calls advance, promote or roll back itself.
"""

import itertools
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.models_registry import selectors
from apps.models_registry.models import Deployment, ModelVersion, RegistryEvent, Rollout
from apps.models_registry.services.actors import User, actor_name, actor_permission_require
from apps.models_registry.services.deployments import (
    PromotionRefused,
    deployment_switch,
    environment_next,
    environments_skipped,
    gates_require,
)
from apps.models_registry.services.events import (
    registry_event_record,
    release_event_write,
    release_events_publish_request,
)
from inference_common.deployments import DeploymentChange, deployments_channel
from inference_common.version_stats import VersionStats, version_stats_read
from inference_project.redis_clients import redis_sync

logger = logging.getLogger(__name__)

CANARY_STEPS = [5, 25, 50, 100]
SHADOW_MIRROR_PERCENT = 100
ANALYSIS_ACTOR = "rollout-analysis"

# What the analysis allows a candidate, against the live version over the same step's window.
# The model's own (RegisteredModel.rollout_thresholds, from its card) and the rollout's win.
ANALYSIS_DEFAULTS: dict[str, float] = {
    # Requests the candidate must have answered in the step before any decision.
    "min_samples": 100,
    # Its error rate (predict failures, loads that failed) may exceed live's by at most this.
    "max_error_rate_increase": 0.02,
    # Its p99 worker latency may be at most this many times live's (and at least 5 ms more).
    "max_p99_ratio": 3.0,
    # Its mean worker latency at most this many times live's (and at least 2 ms more): exact where
    # the p99 is only a bucket's bound, and not lifted by the tail a slow candidate causes live
    # on the cores they share.
    "max_mean_latency_ratio": 3.0,
    # Its mean top-1 confidence (classifiers) at least this share of live's.
    "min_confidence_ratio": 0.8,
    # Shadow: the share of mirrored requests whose top-1 class agrees with live's.
    "min_agreement": 0.9,
    # The drift monitors' figures against each version's own reference (its validation set),
    # once both have a full window: the candidate's largest input PSI and its prediction PSI may
    # exceed live's by at most these.
    "max_input_psi_increase": 0.25,
    "max_prediction_psi_increase": 0.25,
}
P99_SLACK_S = 0.005
MEAN_LATENCY_SLACK_S = 0.002


class RolloutRefused(PromotionRefused):
    """The rollout cannot start or move on (one already runs, it has ended, bad steps)."""


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


@dataclass(frozen=True)
class Side:
    """One version's figures over the current step's window. A p99 past the largest latency
    bucket is kept as that bucket's bound with `p99_beyond_buckets` (the figures are stored and
    served as JSON, which has no infinity)."""

    version: int
    requests: int
    error_rate: float
    p99_s: float | None
    mean_confidence: float | None
    p99_beyond_buckets: bool = False
    mean_latency_s: float | None = None
    # Shadow pairs (the candidate's side only): rows compared, top-1 agreement, mean absolute
    # difference of the outputs that are not class scores.
    pairs: int = 0
    agreement: float | None = None
    mean_abs_diff: float | None = None
    # The drift monitors' latest window (None until a worker's window is full enough).
    input_psi_max: float | None = None
    prediction_psi: float | None = None

    @classmethod
    def of(cls, version: int, stats: VersionStats, drift: dict[str, Any] | None = None) -> "Side":
        p99 = stats.quantile(0.99)
        beyond = p99 is not None and math.isinf(p99)
        drift = drift or {}
        return cls(
            version=version,
            requests=stats.requests,
            error_rate=round(stats.error_rate, 6),
            p99_s=max(b for b, _ in stats.latency_buckets if math.isfinite(b)) if beyond else p99,
            p99_beyond_buckets=beyond,
            mean_latency_s=_rounded(stats.mean_latency_s),
            mean_confidence=_rounded(stats.mean_confidence),
            pairs=stats.pair_rows,
            agreement=_rounded(stats.agreement),
            mean_abs_diff=_rounded(stats.mean_abs_diff),
            input_psi_max=_rounded(drift.get("input_psi_max")),
            prediction_psi=_rounded(drift.get("prediction_psi")),
        )

    def p99_text(self) -> str:
        return f"{'beyond ' if self.p99_beyond_buckets else ''}{(self.p99_s or 0) * 1000:.1f} ms"


@dataclass(frozen=True)
class Analysis:
    """What one analysis found: `decision` is wait (too few samples), hold (within thresholds,
    dwell time not over), advance, or roll_back (`breaches` say why)."""

    decision: str
    candidate: Side
    live: Side
    waiting_for: int
    dwell_left_s: float
    breaches: list[str] = field(default_factory=list)
    at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollout_thresholds(*, rollout: Rollout) -> dict[str, float]:
    return {**ANALYSIS_DEFAULTS, **rollout.model.rollout_thresholds, **rollout.thresholds}


def thresholds_validate(thresholds: dict[str, Any]) -> dict[str, float]:
    unknown = sorted(set(thresholds) - set(ANALYSIS_DEFAULTS))
    if unknown:
        raise ValidationError(
            {"thresholds": [f"unknown thresholds {unknown} (known: {sorted(ANALYSIS_DEFAULTS)})"]}
        )
    for name, value in thresholds.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValidationError({"thresholds": [f"{name} must be a number >= 0"]})
    return {k: float(v) for k, v in thresholds.items()}


def _steps_validate(steps: list[Any]) -> list[int]:
    if not (
        steps
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100 for s in steps)
        and all(a < b for a, b in itertools.pairwise(steps))
        and steps[-1] == 100
    ):
        raise ValidationError({"steps": ["percentages in 1..100, increasing, ending at 100"]})
    return list(steps)


def _rollout_facts(rollout: Rollout, **extra: Any) -> dict[str, Any]:
    return {
        "rollout": rollout.pk,
        "strategy": rollout.strategy,
        "step": rollout.step,
        "weight": rollout.weight,
        "mirror_percent": rollout.mirror_percent,
        "state": rollout.state,
        **extra,
    }


def _record(
    rollout: Rollout,
    *,
    action: str,
    user: User,
    actor: str | None,
    reason: str = "",
    figures: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    """The history's entry and the release event of one rollout change (inside its transaction)."""
    facts = _rollout_facts(rollout, **extra, **({"figures": figures} if figures else {}))
    registry_event_record(
        model=rollout.model,
        action=action,
        version=rollout.candidate,
        environment=rollout.environment,
        from_version=rollout.baseline.number,
        user=user,
        actor=actor,
        reason=reason,
        details=facts,
    )
    deployment = Deployment.objects.get(model=rollout.model, environment=rollout.environment)
    release_event_write(
        action=action,
        deployment=deployment,
        user=user,
        actor=actor,
        rollout={"candidate": rollout.candidate, **facts},
    )


def _workers_tell(*, environment: str, model: str, version: int, retire_others: bool) -> None:
    """Workers of `environment` load `version` (beside the others, or retiring them once idle)."""
    change = DeploymentChange(
        model=model, version=version, environment=environment, retire_others=retire_others
    )
    try:
        redis_sync().publish(deployments_channel(environment), change.encode())
    except (redis.RedisError, OSError):
        logger.exception("could not tell the workers of %s to load v%s", model, version)


def rollout_start(
    *,
    version: ModelVersion,
    strategy: str,
    environment: str | None = None,
    steps: list[Any] | None = None,
    mirror_percent: int | None = None,
    dwell_s: float | None = None,
    thresholds: dict[str, Any] | None = None,
    user: User = None,
    actor: str | None = None,
    reason: str = "",
) -> Rollout:
    """Start rolling `version` out in `environment` (default: the next one, as for a promotion;
    a skip is refused, promote with a reason instead). The gates run first; a failed one is
    recorded and `PromotionRefused` carries the report, nothing starts."""
    actor_permission_require(user=user, perm="models_registry.promote_deployment")
    if strategy not in Rollout.Strategy.values:
        raise ValidationError({"strategy": [f"one of {Rollout.Strategy.values}"]})
    target = environment or environment_next(version=version)
    if target not in settings.INFERENCE_ENVIRONMENTS:
        raise ValidationError({"environment": [f"unknown environment {target!r}"]})
    skipped = environments_skipped(version=version, environment=target)
    if skipped:
        raise RolloutRefused(f"{version} has not gone through {', '.join(skipped)}: roll it out there first")
    canary = strategy == Rollout.Strategy.CANARY
    planned = _steps_validate(steps if steps is not None else CANARY_STEPS) if canary else [0]
    mirror = 0 if canary else (SHADOW_MIRROR_PERCENT if mirror_percent is None else mirror_percent)
    if not canary and not 0 < mirror <= 100:
        raise ValidationError({"mirror_percent": ["a percentage in 1..100"]})
    limits = thresholds_validate(thresholds or {})
    live = selectors.deployment_get_active(model_name=version.model.name, environment=target)
    if live is None:
        raise RolloutRefused(
            f"nothing of {version.model.name} is live in {target}: promote {version} instead"
        )
    if live.version_id == version.pk:
        raise RolloutRefused(f"{version} is already live in {target}")
    if selectors.rollout_running(model_name=version.model.name, environment=target):
        raise RolloutRefused(f"a rollout of {version.model.name} is already running in {target}")

    report = gates_require(
        version=version,
        environment=target,
        user=user,
        actor=actor,
        reason=reason or f"{strategy} rollout",
        move="rolled out",
    )
    try:
        with transaction.atomic():
            deployment = Deployment.objects.select_for_update().get(pk=live.pk)
            rollout = Rollout.objects.create(
                model=version.model,
                environment=target,
                candidate=version,
                baseline=deployment.version,
                strategy=strategy,
                steps=planned,
                mirror_percent=mirror,
                dwell_s=settings.INFERENCE_ROLLOUT_DWELL_S if dwell_s is None else float(dwell_s),
                thresholds=limits,
                step_started_at=timezone.now(),
                started_by=actor or actor_name(user=user),
            )
            _record(
                rollout,
                action=RegistryEvent.Action.ROLLOUT_START,
                user=user,
                actor=actor,
                reason=reason,
                steps=planned,
                dwell_s=rollout.dwell_s,
                thresholds=rollout_thresholds(rollout=rollout),
                gates=report.as_dict(),
            )
            transaction.on_commit(lambda: _after(rollout, load=True))
    except IntegrityError as exc:  # another start won the race for the one running slot
        raise RolloutRefused(f"a rollout of {version.model.name} is already running in {target}") from exc
    return rollout


def _after(rollout: Rollout, *, load: bool) -> None:
    """Once committed: the candidate loaded beside live (load) or retired once idle; the outbox."""
    if load:
        version = rollout.candidate.number
    else:
        live = selectors.deployment_get_active(model_name=rollout.model.name, environment=rollout.environment)
        version = live.version.number if live else rollout.baseline.number
    _workers_tell(
        environment=rollout.environment, model=rollout.model.name, version=version, retire_others=not load
    )
    release_events_publish_request(environment=rollout.environment)


def _locked_running(rollout: Rollout) -> Rollout:
    current = (
        Rollout.objects.select_for_update()
        .select_related("model", "candidate__model", "baseline")
        .get(pk=rollout.pk)
    )
    if current.state != Rollout.State.RUNNING:
        raise RolloutRefused(f"rollout {rollout.pk} has ended ({current.state})")
    return current


def rollout_advance(
    *,
    rollout: Rollout,
    user: User = None,
    actor: str | None = None,
    reason: str = "",
    figures: dict[str, Any] | None = None,
) -> Rollout:
    """The next step; from the last one (or a shadow's only one) the candidate is promoted."""
    actor_permission_require(user=user, perm="models_registry.promote_deployment")
    with transaction.atomic():
        current = _locked_running(rollout)
        if current.step + 1 >= len(current.steps):
            return _promote_locked(current, user=user, actor=actor, reason=reason, figures=figures)
        weight_before = current.weight
        current.step += 1
        current.step_started_at = timezone.now()
        current.analysis = {}
        current.save(update_fields=["step", "step_started_at", "analysis"])
        _record(
            current,
            action=RegistryEvent.Action.ROLLOUT_STEP,
            user=user,
            actor=actor,
            reason=reason,
            figures=figures,
            from_weight=weight_before,
        )
        transaction.on_commit(lambda: release_events_publish_request(environment=current.environment))
    return current


def rollout_promote(
    *,
    rollout: Rollout,
    user: User = None,
    actor: str | None = None,
    reason: str = "",
    figures: dict[str, Any] | None = None,
) -> Rollout:
    """The candidate becomes live: a promotion (its history entry and release event say which
    rollout), refused if something other than the rollout's baseline is live by now."""
    actor_permission_require(user=user, perm="models_registry.promote_deployment")
    with transaction.atomic():
        return _promote_locked(
            _locked_running(rollout), user=user, actor=actor, reason=reason, figures=figures
        )


def _promote_locked(
    current: Rollout, *, user: User, actor: str | None, reason: str, figures: dict[str, Any] | None
) -> Rollout:
    """rollout_promote's work on `current`, the running rollout's row locked in the caller's
    transaction (rollout_advance's last step is a promotion)."""
    current.state = Rollout.State.PROMOTED
    current.ended_at = timezone.now()
    current.reason = reason or "promoted"
    current.save(update_fields=["state", "ended_at", "reason"])
    _record(
        current,
        action=RegistryEvent.Action.ROLLOUT_PROMOTE,
        user=user,
        actor=actor,
        reason=reason,
        figures=figures,
    )
    deployment_switch(
        version=current.candidate,
        environment=current.environment,
        user=user,
        action=RegistryEvent.Action.PROMOTE,
        reason=reason or f"rollout {current.pk} promoted",
        details={"rollout": current.pk, **({"figures": figures} if figures else {})},
        actor=actor,
        expect_live=current.baseline.number,
    )
    return current


@dataclass(frozen=True)
class _Ending:
    """How a rollout ends without promotion: who may end it, what it records."""

    perm: str
    action: str
    default_reason: str


_ENDINGS: dict[str, _Ending] = {
    Rollout.State.ABORTED: _Ending(
        "models_registry.rollback_deployment", RegistryEvent.Action.ROLLOUT_ABORT, "aborted"
    ),
    Rollout.State.ROLLED_BACK: _Ending(
        "models_registry.rollback_deployment", RegistryEvent.Action.ROLLOUT_ROLLBACK, "rolled back"
    ),
}


def _rollout_end(
    rollout: Rollout,
    *,
    outcome: str,
    user: User,
    actor: str | None,
    reason: str,
    figures: dict[str, Any] | None,
) -> Rollout:
    """The candidate takes no more traffic (`outcome`: aborted or rolled_back); live never changed."""
    ending = _ENDINGS[outcome]
    actor_permission_require(user=user, perm=ending.perm)
    reason = reason or ending.default_reason
    with transaction.atomic():
        current = _locked_running(rollout)
        current.state = outcome
        current.ended_at = timezone.now()
        current.reason = reason
        current.save(update_fields=["state", "ended_at", "reason"])
        _record(current, action=ending.action, user=user, actor=actor, reason=reason, figures=figures)
        transaction.on_commit(lambda: _after(current, load=False))
    return current


def rollout_abort(
    *, rollout: Rollout, user: User = None, actor: str | None = None, reason: str = ""
) -> Rollout:
    """An operator stops the rollout: the candidate takes no more traffic; live never changed."""
    return _rollout_end(
        rollout, outcome=Rollout.State.ABORTED, user=user, actor=actor, reason=reason, figures=None
    )


def rollout_roll_back(
    *,
    rollout: Rollout,
    reason: str,
    figures: dict[str, Any] | None = None,
    user: User = None,
    actor: str | None = None,
) -> Rollout:
    """The analysis (or an operator) found the candidate worse: it takes no more traffic."""
    return _rollout_end(
        rollout, outcome=Rollout.State.ROLLED_BACK, user=user, actor=actor, reason=reason, figures=figures
    )


def _side(rollout: Rollout, version: ModelVersion, since: float) -> Side:
    client = redis_sync()
    stats = version_stats_read(
        client,
        environment=rollout.environment,
        model=rollout.model.name,
        version=version.number,
        since=since,
    )
    drift = selectors.drift_report_get(version=version, environment=rollout.environment, client=client)
    return Side.of(version.number, stats, drift.measures)


def rollout_analyse(*, rollout: Rollout, now: float | None = None) -> Analysis:
    """Candidate against live over the current step's window, and the decision it supports."""
    now = timezone.now().timestamp() if now is None else now
    since = rollout.step_started_at.timestamp()
    limits = rollout_thresholds(rollout=rollout)
    candidate = _side(rollout, rollout.candidate, since)
    live = _side(rollout, rollout.baseline, since)
    samples = candidate.requests
    if rollout.strategy == Rollout.Strategy.SHADOW:
        samples = min(samples, candidate.pairs)  # its answers, and as many compared with live's
    waiting_for = max(0, int(limits["min_samples"]) - samples)
    dwell_left = max(0.0, rollout.dwell_s - (now - since))
    stamp = timezone.now().isoformat(timespec="seconds")
    if waiting_for:
        return Analysis("wait", candidate, live, waiting_for, dwell_left, at=stamp)
    breaches = _breaches(candidate, live, limits)
    if breaches:
        return Analysis("roll_back", candidate, live, 0, dwell_left, breaches, at=stamp)
    return Analysis("hold" if dwell_left else "advance", candidate, live, 0, dwell_left, at=stamp)


def _breaches(candidate: Side, live: Side, limits: dict[str, float]) -> list[str]:
    found = []
    allowed_errors = live.error_rate + limits["max_error_rate_increase"]
    if candidate.error_rate > allowed_errors:
        found.append(
            f"error rate {candidate.error_rate:.2%} > {allowed_errors:.2%} (live {live.error_rate:.2%})"
        )
    if candidate.p99_s is not None and live.p99_s is not None:
        allowed = max(live.p99_s * limits["max_p99_ratio"], live.p99_s + P99_SLACK_S)
        # A candidate past the largest bucket while live is not breaches whatever the ratio: its
        # p99_s is only that bound, a lower estimate.
        beyond = candidate.p99_beyond_buckets and not live.p99_beyond_buckets
        if beyond or candidate.p99_s > allowed:
            found.append(
                f"p99 latency {candidate.p99_text()} > {allowed * 1000:.1f} ms (live {live.p99_text()})"
            )
    if candidate.mean_latency_s is not None and live.mean_latency_s is not None:
        allowed = max(
            live.mean_latency_s * limits["max_mean_latency_ratio"], live.mean_latency_s + MEAN_LATENCY_SLACK_S
        )
        if candidate.mean_latency_s > allowed:
            found.append(
                f"mean latency {candidate.mean_latency_s * 1000:.1f} ms > {allowed * 1000:.1f} ms "
                f"(live {live.mean_latency_s * 1000:.1f} ms)"
            )
    if candidate.mean_confidence is not None and live.mean_confidence:
        allowed = live.mean_confidence * limits["min_confidence_ratio"]
        if candidate.mean_confidence < allowed:
            found.append(
                f"mean confidence {candidate.mean_confidence:.3f} < {allowed:.3f} "
                f"(live {live.mean_confidence:.3f})"
            )
    if candidate.agreement is not None and candidate.agreement < limits["min_agreement"]:
        found.append(f"shadow agreement {candidate.agreement:.1%} < {limits['min_agreement']:.1%}")
    for figure, limit, words in (
        ("input_psi_max", "max_input_psi_increase", "input drift (largest PSI)"),
        ("prediction_psi", "max_prediction_psi_increase", "prediction shift (PSI)"),
    ):
        ours, theirs = getattr(candidate, figure), getattr(live, figure)
        if ours is not None and theirs is not None and ours > theirs + limits[limit]:
            found.append(f"{words} {ours:.3f} > {theirs + limits[limit]:.3f} (live {theirs:.3f})")
    return found


def rollout_decide(*, rollout: Rollout, now: float | None = None) -> Analysis:
    """Analyse `rollout`, keep the figures on it (the page shows them) and act on the decision."""
    analysis = rollout_analyse(rollout=rollout, now=now)
    figures = analysis.as_dict()
    Rollout.objects.filter(pk=rollout.pk, state=Rollout.State.RUNNING).update(analysis=figures)
    try:
        if analysis.decision == "advance":
            rollout_advance(
                rollout=rollout, actor=ANALYSIS_ACTOR, reason="within thresholds", figures=figures
            )
        elif analysis.decision == "roll_back":
            rollout_roll_back(
                rollout=rollout, actor=ANALYSIS_ACTOR, reason="; ".join(analysis.breaches), figures=figures
            )
    except RolloutRefused:
        pass  # it ended meanwhile (an operator promoted or aborted it)
    return analysis


def rollouts_analyse() -> int:
    """The platform worker's periodic pass over every running rollout; how many it analysed."""
    running = selectors.rollouts_running()
    for rollout in running:
        try:
            rollout_decide(rollout=rollout)
        except (redis.RedisError, OSError):
            logger.exception("rollout %s not analysed: Redis unreachable", rollout.pk)
    return len(running)
