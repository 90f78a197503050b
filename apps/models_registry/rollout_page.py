"""What the admin's rollout page shows: the step and weights, the latest analysis' figures side by
side with what the thresholds allow, charts of both versions over the rollout's time (from the
per-version figures in Redis), and the decision log (the history entries of this rollout).

The analysis' figures are read defensively (`.get`): a figure an older analysis did not record,
or one added since (shadow agreement, mean absolute difference), shows as "-" or not at all."""

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import redis
from django.utils import timezone

from apps.models_registry import selectors
from apps.models_registry.models import ModelVersion, RegistryEvent, Rollout
from apps.models_registry.services.deployments import PromotionRefused, environment_next
from apps.models_registry.services.rollouts import ANALYSIS_DEFAULTS, P99_SLACK_S, rollout_thresholds
from apps.models_registry.sparklines import sparkline_svg
from inference_common.version_stats import BUCKET_S, VersionStats, version_stats_series

logger = logging.getLogger(__name__)

# A chart has at most this many points: longer rollouts add up neighbouring 5 s buckets.
CHART_POINTS = 60
# Candidate in the first colour (the admin's orange), live in the second (its blue).
CHART_COLORS = ("#e07b39", "#79aec8")


def _percent(value: float) -> str:
    return f"{value:.2%}"


def _latency(seconds: float) -> str:
    return "beyond the largest bucket" if math.isinf(seconds) else f"{seconds * 1000:.1f} ms"


def _shown(value: Any, formatted: Callable[[float], str]) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return formatted(float(value))


@dataclass(frozen=True)
class FigureRow:
    """One figure of the latest analysis: candidate, live, what the thresholds allow the
    candidate, and whether the analysis found it breached."""

    name: str
    candidate: str
    live: str
    allowed: str
    breached: bool = False


@dataclass(frozen=True)
class _Figure:
    key: str
    name: str
    # How the decision log names it.
    short: str
    formatted: Callable[[float], str]
    # The start of the analysis' breach message for it (services/rollouts.py `_breaches`).
    breach: str = ""
    # Shown only when a side has it (shadow pairs, drift windows), or always on a shadow.
    optional: bool = False
    on_shadow: bool = False


def _count(value: float) -> str:
    return str(int(value))


def _ratio(value: float) -> str:
    return f"{value:.3f}"


def _fine(value: float) -> str:
    return f"{value:.4g}"


_FIGURES = (
    _Figure("requests", "requests", "requests", _count),
    _Figure("pairs", "pairs compared with live's", "pairs", _count, optional=True, on_shadow=True),
    _Figure("error_rate", "error rate", "errors", _percent, "error rate"),
    _Figure("p99_s", "p99 latency (worker)", "p99", _latency, "p99"),
    _Figure("mean_confidence", "mean top-1 confidence", "confidence", _ratio, "mean confidence"),
    _Figure("agreement", "shadow agreement (top-1)", "agreement", _percent, "shadow agreement", True, True),
    _Figure("mean_abs_diff", "mean absolute difference", "mean abs diff", _fine, optional=True),
    _Figure("input_psi_max", "input drift (largest PSI)", "input PSI", _ratio, "input drift", True),
    _Figure("prediction_psi", "prediction shift (PSI)", "prediction PSI", _ratio, "prediction shift", True),
)


def _side_value(figure: _Figure, side: dict[str, Any]) -> str:
    shown = _shown(side.get(figure.key), figure.formatted)
    # A p99 past the largest latency bucket is stored as that bound, flagged.
    return f"beyond {shown}" if figure.key == "p99_s" and side.get("p99_beyond_buckets") else shown


def _present(figure: _Figure, side: dict[str, Any]) -> bool:
    value = side.get(figure.key)
    return value is not None and not (figure.key == "pairs" and not value)


# What the thresholds allow the candidate per figure, in words (a figure without a threshold: "-").
_ALLOWED: dict[str, Callable[[dict[str, float]], str]] = {
    "requests": lambda t: f"≥ {int(t['min_samples'])} in the step before any decision",
    "pairs": lambda t: f"≥ {int(t['min_samples'])} in the step before any decision (shadow)",
    "error_rate": lambda t: f"≤ live + {t['max_error_rate_increase']:.2%}",
    "p99_s": lambda t: f"≤ {t['max_p99_ratio']:g} times live (and up to live + {P99_SLACK_S * 1000:g} ms)",
    "mean_confidence": lambda t: f"≥ {t['min_confidence_ratio']:g} times live",
    "agreement": lambda t: f"≥ {t['min_agreement']:.0%}",
    "mean_abs_diff": lambda t: f"≤ {t['max_mean_abs_diff']:g}",
    "input_psi_max": lambda t: f"≤ live + {t['max_input_psi_increase']:g}",
    "prediction_psi": lambda t: f"≤ live + {t['max_prediction_psi_increase']:g}",
}


def _allowed(key: str, limits: dict[str, float]) -> str:
    try:
        return _ALLOWED[key](limits)
    except KeyError:
        return "-"


def rollout_figures(*, analysis: dict[str, Any], limits: dict[str, float], shadow: bool) -> list[FigureRow]:
    """The latest analysis' figures, candidate beside live. Pairs, agreement and mean absolute
    difference are the candidate's (measured against live's answers), drift each side's: shown
    when the analysis has them (pairs and agreement on a shadow always)."""
    candidate = analysis.get("candidate") or {}
    live = analysis.get("live") or {}
    breaches = [str(b) for b in analysis.get("breaches") or []]
    return [
        FigureRow(
            name=figure.name,
            candidate=_side_value(figure, candidate),
            live=_side_value(figure, live),
            allowed=_allowed(figure.key, limits),
            breached=bool(figure.breach) and any(b.startswith(figure.breach) for b in breaches),
        )
        for figure in _FIGURES
        if not figure.optional
        or (shadow and figure.on_shadow)
        or _present(figure, candidate)
        or _present(figure, live)
    ]


@dataclass(frozen=True)
class LogEntry:
    """One entry of the decision log: a history event of this rollout."""

    at: datetime
    action: str
    actor: str
    reason: str
    change: str
    # The figures the decision was made on, a line per side, and the breaches it found.
    figures: list[str] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)


def _side_line(label: str, side: Any) -> str:
    """One side's figures as the decision log writes them: "candidate v2: 120 requests, ..."."""
    if not isinstance(side, dict):
        return f"{label}: -"
    parts = [f"{_side_value(_FIGURES[0], side)} requests"]
    parts += [
        f"{figure.short} {_side_value(figure, side)}"
        for figure in _FIGURES[1:]
        if not figure.optional or _present(figure, side)
    ]
    version = side.get("version")
    return f"{label}{f' v{version}' if version is not None else ''}: " + ", ".join(parts)


def _change(event: RegistryEvent) -> str:
    """What the event changed, in a few words."""
    details = event.details if isinstance(event.details, dict) else {}
    if event.action == RegistryEvent.Action.ROLLOUT_START:
        steps = details.get("steps") or []
        plan = (
            " → ".join(f"{s} %" for s in steps)
            if details.get("strategy") == Rollout.Strategy.CANARY
            else f"mirror {details.get('mirror_percent', '?')} %"
        )
        return f"{plan}, dwell {details.get('dwell_s', '?')} s"
    if event.action == RegistryEvent.Action.ROLLOUT_STEP:
        return f"{details.get('from_weight', '?')} % → {details.get('weight', '?')} %"
    if event.action == RegistryEvent.Action.PROMOTE:
        return f"v{event.from_version} → v{event.to_version} live"
    if details.get("superseded_by") is not None:
        return f"superseded by v{details['superseded_by']}"
    return ""


def rollout_decision_log(*, rollout: Rollout) -> list[LogEntry]:
    """The history entries of `rollout` (those whose details name it), oldest first."""
    events = RegistryEvent.objects.filter(model_id=rollout.model_id, details__rollout=rollout.pk).order_by(
        "created_at", "id"
    )
    entries = []
    for event in events:
        details = event.details if isinstance(event.details, dict) else {}
        recorded = details.get("figures")
        figures: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
        lines = []
        if figures:
            lines = [
                _side_line("candidate", figures.get("candidate")),
                _side_line("live", figures.get("live")),
            ]
        entries.append(
            LogEntry(
                at=event.created_at,
                action=event.get_action_display(),
                actor=event.actor,
                reason=event.reason,
                change=_change(event),
                figures=lines,
                breaches=[str(b) for b in figures.get("breaches") or []],
            )
        )
    return entries


def _merged(group: list[VersionStats]) -> VersionStats:
    """Neighbouring buckets added up into one."""
    sums: dict[str, Any] = {
        f.name: sum(getattr(s, f.name) for s in group)
        for f in fields(VersionStats)
        if f.name != "latency_buckets"
    }
    sums["latency_buckets"] = [
        (bound, sum(s.latency_buckets[i][1] for s in group))
        for i, (bound, _) in enumerate(group[0].latency_buckets)
    ]
    return VersionStats(**sums)


@dataclass(frozen=True)
class _Series:
    title: str
    value: Callable[[VersionStats, float], float | None]
    shown: Callable[[float], str]


def _p99_ms(stats: VersionStats, _: float) -> float | None:
    p99 = stats.p99_s
    return None if p99 is None or math.isinf(p99) else p99 * 1000


_SERIES = (
    _Series("requests/s", lambda s, seconds: s.requests / seconds, lambda v: f"{v:.3g}"),
    _Series("error rate", lambda s, _: s.error_rate if s.requests else None, _percent),
    _Series("p99 latency, ms", _p99_ms, lambda v: f"{v:.3g}"),
    _Series("mean top-1 confidence", lambda s, _: s.mean_confidence, lambda v: f"{v:.3f}"),
)
_AGREEMENT = _Series("shadow agreement", lambda s, _: s.agreement, _percent)


def rollout_charts(*, rollout: Rollout, client: redis.Redis, now: float | None = None) -> list[str]:
    """A sparkline per figure over the rollout's time (from its start to its end, or to the last
    whole bucket while it runs), the candidate's line beside live's; dotted lines where it
    stepped. Raises Redis' errors."""
    now = timezone.now().timestamp() if now is None else now
    since = rollout.created_at.timestamp()
    until = min(now, rollout.ended_at.timestamp()) if rollout.ended_at else now
    sides = [
        (f"candidate v{rollout.candidate.number}", rollout.candidate.number),
        (f"live v{rollout.baseline.number}", rollout.baseline.number),
    ]
    buckets = {
        number: version_stats_series(
            client,
            environment=rollout.environment,
            model=rollout.model.name,
            version=number,
            since=since,
            now=until,
        )
        for _, number in sides
    }
    if rollout.ended_at is None and len(buckets[rollout.candidate.number]) > 1:
        # The bucket of this very moment is still filling: drawn, every line would dip at its end.
        buckets = {number: series[:-1] for number, series in buckets.items()}
    first = buckets[rollout.candidate.number]
    size = max(1, math.ceil(len(first) / CHART_POINTS))
    grouped = {
        number: [_merged([s for _, s in series[i : i + size]]) for i in range(0, len(series), size)]
        for number, series in buckets.items()
    }
    points = len(grouped[rollout.candidate.number])
    start = first[0][0] if first else since
    seconds = float(size * BUCKET_S)
    steps = RegistryEvent.objects.filter(
        model_id=rollout.model_id, details__rollout=rollout.pk, action=RegistryEvent.Action.ROLLOUT_STEP
    ).values_list("created_at", flat=True)
    span = (points - 1) * seconds
    marks = [(at.timestamp() - start) / span for at in steps] if span > 0 else []
    chosen = list(_SERIES)
    if any(s.pair_class_rows for s in grouped[rollout.candidate.number]):
        chosen.append(_AGREEMENT)
    charts = []
    for series in chosen:
        lines: list[tuple[str, list[float | None]]] = [
            (label, [series.value(stats, seconds) for stats in grouped[number]]) for label, number in sides
        ]
        if series is _AGREEMENT:
            lines = lines[:1]  # the candidate's, against live's answers
        charts.append(
            sparkline_svg(lines, title=series.title, shown=series.shown, marks=marks, colors=CHART_COLORS)
        )
    return charts


@dataclass
class RolloutPage:
    """Everything the rollout page shows. `charts_error` says why there are no charts."""

    rollout: Rollout
    running: bool
    step_text: str
    steps: list[tuple[int, bool]]
    weights: str
    analysis: dict[str, Any]
    figures: list[FigureRow]
    limits: dict[str, float]
    log: list[LogEntry]
    charts: list[str] = field(default_factory=list)
    charts_error: str = ""


def rollout_page_get(*, rollout: Rollout, client: redis.Redis, now: float | None = None) -> RolloutPage:
    """The page of `rollout`; with Redis unreachable it still renders, `charts_error` says so."""
    canary = rollout.strategy == Rollout.Strategy.CANARY
    running = rollout.state == Rollout.State.RUNNING
    if canary:
        step_text = f"step {rollout.step + 1} of {len(rollout.steps)}"
        weight = int(rollout.steps[rollout.step]) if running else 0
        weights = (
            f"candidate {weight} %, live {100 - weight} % of the traffic not pinned to a version"
            if running
            else f"ended at {rollout.steps[rollout.step]} %: live takes all the traffic"
        )
    else:
        step_text = "one step (shadow)"
        weights = f"a copy of {rollout.mirror_percent} % of the live requests goes to the candidate" + (
            "" if running else " (no longer)"
        )
    limits = rollout_thresholds(rollout=rollout)
    analysis = rollout.analysis if isinstance(rollout.analysis, dict) else {}
    page = RolloutPage(
        rollout=rollout,
        running=running,
        step_text=step_text,
        steps=[(int(s), i == rollout.step) for i, s in enumerate(rollout.steps)] if canary else [],
        weights=weights,
        analysis=analysis,
        figures=rollout_figures(analysis=analysis, limits=limits, shadow=not canary),
        limits=limits,
        log=rollout_decision_log(rollout=rollout),
    )
    try:
        page.charts = rollout_charts(rollout=rollout, client=client, now=now)
    except (redis.RedisError, OSError) as exc:
        logger.warning("rollout %s: no charts, Redis unreachable: %s", rollout.pk, exc)
        page.charts_error = f"Charts unavailable: Redis is unreachable ({exc})."
    return page


@dataclass(frozen=True)
class StartPlan:
    """What the start form shows beside its fields: the environment a rollout goes to by default
    (none when the version has gone through them all), what is live where, the thresholds a
    rollout of this model gets unless it sets its own."""

    next_environment: str
    live: list[tuple[str, str]]
    limits: dict[str, float]


def rollout_start_plan(*, version: ModelVersion, environments: list[str]) -> StartPlan:
    try:
        next_environment = environment_next(version=version)
    except PromotionRefused:
        next_environment = ""
    live = []
    for environment in environments:
        deployment = selectors.deployment_get_active(model_name=version.model.name, environment=environment)
        live.append((environment, str(deployment.version) if deployment else "nothing"))
    return StartPlan(
        next_environment=next_environment,
        live=live,
        limits={**ANALYSIS_DEFAULTS, **version.model.rollout_thresholds},
    )
