"""Prometheus figures of rollouts, exported by the platform worker (the process that analyses them).

Everything is derived from the registry's database at each analysis pass (`rollout_metrics_update`,
called by the `analyse_rollouts` task), never counted in process: every platform worker exports
the same values, a restart loses nothing, and a rollout ended by an operator's REST call counts
like one the analysis ended. Aggregate with max(), not sum(), across platform workers.

The samples live in one collector of prometheus_client's default registry, replaced whole at each
update, so a rollout that ended takes its series with it. The platform worker's pool child (it
runs every analysis: `--concurrency 1`) serves them (`rollout_metrics_serve`).

    inference_rollout_weight_percent   running rollouts: canary weight, or shadow mirror percent
    inference_rollout_state            1 per running rollout (state="running")
    inference_rollouts_ended_total     ended rollouts by outcome, from 0 for every model/environment
    inference_rollout_last_ended_timestamp_seconds   when the latest one of each outcome ended
    inference_rollout_{requests,error_ratio,p99_seconds,confidence_mean}{side}, and
    inference_rollout_agreement_ratio  the latest analysis of each running rollout
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from django.db.models import BooleanField, ExpressionWrapper, Q
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from apps.models_registry import selectors
from apps.models_registry.models import Deployment, Rollout

logger = logging.getLogger(__name__)

# How an ended rollout ended. "superseded": a switch made outside the rollout ended it (recorded
# as aborted, its reason starting so; services/deployments.py `_rollouts_supersede`).
OUTCOMES = ("promoted", "rolled_back", "aborted", "superseded")
SUPERSEDED_PREFIX = "superseded"
_SIDES = ("candidate", "live")
_RUNNING = ["model", "environment", "candidate"]


def rollout_outcome(*, state: str, superseded: bool) -> str:
    """The outcome label of an ended rollout's state (and whether its reason says superseded)."""
    if state == Rollout.State.ABORTED and superseded:
        return "superseded"
    return state


class RolloutCollector(Collector):
    """The families of the latest update; replaced whole, so ended rollouts' series go with it."""

    def __init__(self) -> None:
        self._families: list[Metric] = []

    def update(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return list(self._families)

    def describe(self) -> Iterable[Metric]:
        return []  # names change with the rollouts: nothing to check at registration


ROLLOUT_COLLECTOR = RolloutCollector()
REGISTRY.register(ROLLOUT_COLLECTOR)


@dataclass
class _Families:
    weight: GaugeMetricFamily
    state: GaugeMetricFamily
    ended: CounterMetricFamily
    last_ended: GaugeMetricFamily
    requests: GaugeMetricFamily
    error_ratio: GaugeMetricFamily
    p99: GaugeMetricFamily
    confidence: GaugeMetricFamily
    agreement: GaugeMetricFamily

    @classmethod
    def empty(cls) -> "_Families":
        side = [*_RUNNING, "side", "version"]
        return cls(
            weight=GaugeMetricFamily(
                "inference_rollout_weight_percent",
                "Running rollouts: the candidate's share of unpinned traffic (canary) or of live "
                "requests mirrored to it (shadow), in percent.",
                labels=[*_RUNNING, "strategy"],
            ),
            state=GaugeMetricFamily(
                "inference_rollout_state",
                "1 for each running rollout.",
                labels=[*_RUNNING, "state"],
            ),
            ended=CounterMetricFamily(
                "inference_rollouts_ended",
                "Rollouts ended, by outcome (promoted, rolled_back, aborted, superseded), counted "
                "from the registry.",
                labels=["model", "environment", "outcome"],
            ),
            last_ended=GaugeMetricFamily(
                "inference_rollout_last_ended_timestamp_seconds",
                "When the latest rollout of each outcome ended (Unix time), and its candidate.",
                labels=["model", "environment", "candidate", "outcome"],
            ),
            requests=GaugeMetricFamily(
                "inference_rollout_requests",
                "Requests each side answered in the running rollout's current step (latest analysis).",
                labels=side,
            ),
            error_ratio=GaugeMetricFamily(
                "inference_rollout_error_ratio",
                "Error rate of each side over the current step (latest analysis).",
                labels=side,
            ),
            p99=GaugeMetricFamily(
                "inference_rollout_p99_seconds",
                "p99 worker latency of each side over the current step (latest analysis).",
                labels=side,
            ),
            confidence=GaugeMetricFamily(
                "inference_rollout_confidence_mean",
                "Mean top-1 confidence of each side over the current step (latest analysis).",
                labels=side,
            ),
            agreement=GaugeMetricFamily(
                "inference_rollout_agreement_ratio",
                "Share of mirrored requests whose top-1 class agrees with live's (latest analysis).",
                labels=_RUNNING,
            ),
        )

    def all(self) -> list[Metric]:
        return [
            self.weight,
            self.state,
            self.ended,
            self.last_ended,
            self.requests,
            self.error_ratio,
            self.p99,
            self.confidence,
            self.agreement,
        ]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _analysis_add(families: _Families, running: list[str], analysis: dict[str, Any]) -> None:
    """The figures of `Rollout.analysis` (an `Analysis.as_dict()`; {} before the step's first)."""
    for side in _SIDES:
        figures = analysis.get(side)
        if not isinstance(figures, dict):
            continue
        labels = [*running, side, str(figures.get("version", ""))]
        for family, key in (
            (families.requests, "requests"),
            (families.error_ratio, "error_rate"),
            (families.p99, "p99_s"),
            (families.confidence, "mean_confidence"),
        ):
            value = _number(figures.get(key))
            if value is not None:
                family.add_metric(labels, value)
        if side == "candidate":
            agreement = _number(figures.get("agreement"))
            if agreement is not None:
                families.agreement.add_metric(running, agreement)


def _running_add(families: _Families) -> None:
    for rollout in selectors.rollouts_running():
        running = [rollout.model.name, rollout.environment, str(rollout.candidate.number)]
        canary = rollout.strategy == Rollout.Strategy.CANARY
        families.weight.add_metric(
            [*running, rollout.strategy], rollout.weight if canary else rollout.mirror_percent
        )
        families.state.add_metric([*running, rollout.state], 1)
        _analysis_add(families, running, rollout.analysis or {})


def _ended_add(families: _Families) -> None:
    """Counts by outcome from 0 for every model and environment a rollout can run in (each one
    with a deployment) or ran in, so an alert on increase() sees the first."""
    counts: dict[tuple[str, str], dict[str, int]] = {
        pair: dict.fromkeys(OUTCOMES, 0)
        for pair in Deployment.objects.values_list("model__name", "environment").distinct()
    }
    latest: dict[tuple[str, str, str], tuple[float, int]] = {}
    ended = (
        Rollout.objects.exclude(state=Rollout.State.RUNNING)
        .annotate(
            superseded=ExpressionWrapper(Q(reason__startswith=SUPERSEDED_PREFIX), output_field=BooleanField())
        )
        .values_list("model__name", "environment", "state", "superseded", "candidate__number", "ended_at")
    )
    for model, environment, state, superseded, candidate, ended_at in ended:
        outcome = rollout_outcome(state=state, superseded=bool(superseded))
        pair = counts.setdefault((model, environment), dict.fromkeys(OUTCOMES, 0))
        pair[outcome] = pair.get(outcome, 0) + 1
        if ended_at is not None:
            key = (model, environment, outcome)
            at = ended_at.timestamp()
            if key not in latest or at > latest[key][0]:
                latest[key] = (at, candidate)
    for (model, environment), by_outcome in sorted(counts.items()):
        for outcome, count in by_outcome.items():
            families.ended.add_metric([model, environment, outcome], count)
    for (model, environment, outcome), (at, candidate) in sorted(latest.items()):
        families.last_ended.add_metric([model, environment, str(candidate), outcome], at)


def rollout_metric_families() -> list[Metric]:
    """Every rollout figure, read from the registry now."""
    families = _Families.empty()
    _running_add(families)
    _ended_add(families)
    return families.all()


def rollout_metrics_update() -> None:
    """Replace the exported rollout figures with what the registry says now (after an analysis)."""
    ROLLOUT_COLLECTOR.update(rollout_metric_families())


def rollout_metrics_serve(*, port: int, host: str) -> tuple[WSGIServer, Thread] | None:
    """Serve this process's default registry (the rollout figures among it) at /metrics on
    `port`; None (and a warning) when the port is taken, e.g. by a second pool child."""
    try:
        served = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        logger.warning("rollout metrics not served on %s:%s: %s", host, port, exc)
        return None
    logger.info("rollout metrics on http://%s:%s/metrics", host, port, extra={"metrics_port": port})
    return served
