"""Reads from the registry."""

import time
from dataclasses import dataclass, field, replace
from typing import Any, cast

import orjson
import redis
from django.conf import settings

from apps.models_registry import drift
from apps.models_registry.models import Deployment, ModelVersion, RegisteredModel, RegistryEvent, Rollout


def model_version_get(*, model_name: str, number: int) -> ModelVersion | None:
    return ModelVersion.objects.select_related("model").filter(model__name=model_name, number=number).first()


def deployment_get_active(*, model_name: str, environment: str) -> Deployment | None:
    return (
        Deployment.objects.select_related("model", "version", "previous_version", "last_good_version")
        .filter(model__name=model_name, environment=environment)
        .first()
    )


def deployment_list(*, environment: str) -> list[Deployment]:
    return list(
        Deployment.objects.select_related("model", "version", "previous_version", "last_good_version").filter(
            environment=environment
        )
    )


def model_version_list(*, model_name: str) -> list[ModelVersion]:
    return list(ModelVersion.objects.select_related("model").filter(model__name=model_name))


def model_version_environments(*, version: ModelVersion) -> set[str]:
    """Environments this version has been live in (promoted or rolled back to)."""
    events = RegistryEvent.objects.filter(
        version=version, action__in=[RegistryEvent.Action.PROMOTE, RegistryEvent.Action.ROLLBACK]
    )
    return set(events.values_list("environment", flat=True)) | set(
        version.deployments.values_list("environment", flat=True)
    )


@dataclass(frozen=True)
class Tenure:
    """One stretch of a version being live in an environment, and how it ended: `ended_by` is
    the switch that replaced it ("promote" or "rollback", None while it is live), `successor`
    the version that switch made live, `served` whether a worker loaded it during the stretch."""

    version: int
    ended_by: str | None = None
    successor: int | None = None
    served: bool = False


SWITCHES = (RegistryEvent.Action.PROMOTE, RegistryEvent.Action.ROLLBACK)


def switch_event_latest(*, model: RegisteredModel, environment: str) -> RegistryEvent | None:
    """The switch (promotion or rollback) that made the live version of `environment` live.
    Switches of one environment are made one at a time under the deployment row's lock, so ids
    order them whatever the clocks of the hosts that wrote them."""
    return (
        RegistryEvent.objects.filter(
            model=model, environment=environment, action__in=SWITCHES, to_version__isnull=False
        )
        .order_by("-id")
        .first()
    )


def environment_tenures(*, model: RegisteredModel, environment: str) -> list[Tenure]:
    """The versions live in `environment` one after the other, oldest first, from the history of
    switches (promotions, including bootstrap deployments, and rollbacks, in id order as
    `switch_event_latest` explains) and the workers' reports that they served the live version,
    each naming the switch it served under (details["switch"])."""
    served = {
        details.get("switch")
        for details in RegistryEvent.objects.filter(
            model=model, environment=environment, action=RegistryEvent.Action.SERVED
        ).values_list("details", flat=True)
    }
    switches = RegistryEvent.objects.filter(
        model=model, environment=environment, action__in=SWITCHES, to_version__isnull=False
    ).order_by("id")
    tenures: list[Tenure] = []
    for pk, action, to_version in switches.values_list("id", "action", "to_version"):
        number = int(cast("int", to_version))
        if tenures:
            tenures[-1] = replace(tenures[-1], ended_by=action, successor=number)
        tenures.append(Tenure(number, served=pk in served))
    return tenures


def model_get(*, name: str) -> RegisteredModel | None:
    return RegisteredModel.objects.filter(name=name).first()


def model_list() -> list[RegisteredModel]:
    return list(
        RegisteredModel.objects.prefetch_related(
            "deployments__version", "deployments__previous_version", "deployments__last_good_version"
        )
    )


def registry_history(*, model: RegisteredModel, limit: int = 200) -> list[RegistryEvent]:
    return list(model.events.select_related("version")[:limit])


def version_is_deployed_anywhere(*, model_name: str, number: int) -> bool:
    return Deployment.objects.filter(model__name=model_name, version__number=number).exists()


@dataclass(frozen=True)
class WorkerWindow:
    """One worker's window of a version, as it last published it."""

    worker: str
    progress: drift.WindowProgress


@dataclass
class DriftReport:
    """Live traffic of a version against its reference: the windows of the workers that
    published one within `max_age_s`, added up; `windows` says how full each worker's window is
    (also before it holds enough rows), `min_rows` how many a window needs: the workers' own
    minimum, or this process's INFERENCE_DRIFT_MIN_ROWS while none has reported."""

    reference: drift.Reference | None
    workers: int = 0
    summary: dict[str, Any] | None = None
    measures: dict[str, Any] | None = None
    findings: list[str] = field(default_factory=list)
    windows: list[WorkerWindow] = field(default_factory=list)
    min_rows: int = 0


def drift_windows_get(
    *, version: ModelVersion, environment: str, client: redis.Redis, max_age_s: float = 60
) -> list[WorkerWindow]:
    """How full each worker's window of `version` is, fullest first."""
    key = drift.PROGRESS_KEY.format(environment=environment, model=version.model.name, version=version.number)
    windows = []
    for worker, raw in client.hgetall(key).items():
        value = orjson.loads(raw)
        if time.time() - value.get("at", 0) > max_age_s:
            continue
        progress = drift.WindowProgress(**{k: int(value[k]) for k in ("rows", "seen", "min_rows", "window")})
        name = worker.decode() if isinstance(worker, bytes) else str(worker)
        windows.append(WorkerWindow(worker=name, progress=progress))
    return sorted(windows, key=lambda w: (-w.progress.rows, w.worker))


def drift_report_get(
    *, version: ModelVersion, environment: str, client: redis.Redis, max_age_s: float = 60
) -> DriftReport:
    if not version.reference_stats:
        return DriftReport(reference=None)
    reference = drift.Reference(version.reference_stats)
    windows = drift_windows_get(version=version, environment=environment, client=client, max_age_s=max_age_s)
    min_rows = max((w.progress.min_rows for w in windows), default=settings.INFERENCE_DRIFT_MIN_ROWS)
    key = drift.SUMMARY_KEY.format(environment=environment, model=version.model.name, version=version.number)
    windows_published = [orjson.loads(raw) for raw in client.hvals(key)]
    fresh = [w for w in windows_published if time.time() - w.get("at", 0) <= max_age_s]
    summary = drift.summaries_merge(fresh)
    if summary is None or not summary["rows"]:
        return DriftReport(reference=reference, windows=windows, min_rows=min_rows)
    measures = drift.drift_measures(reference, summary)
    return DriftReport(
        reference=reference,
        workers=len(fresh),
        summary=summary,
        measures=measures,
        findings=drift.drift_findings(reference, measures),
        windows=windows,
        min_rows=min_rows,
    )


def rollout_running(*, model_name: str, environment: str) -> Rollout | None:
    """The rollout running for a model in an environment, if any (at most one)."""
    return (
        Rollout.objects.select_related("model", "candidate__model", "baseline__model")
        .filter(model__name=model_name, environment=environment, state=Rollout.State.RUNNING)
        .first()
    )


def rollouts_running(*, environment: str | None = None) -> list[Rollout]:
    found = Rollout.objects.select_related("model", "candidate__model", "baseline__model").filter(
        state=Rollout.State.RUNNING
    )
    return list(found if environment is None else found.filter(environment=environment))


def rollout_list(*, model: RegisteredModel) -> list[Rollout]:
    return list(Rollout.objects.select_related("model", "candidate", "baseline").filter(model=model))


def rollout_get(*, model: RegisteredModel, rollout_id: int) -> Rollout | None:
    return (
        Rollout.objects.select_related("model", "candidate__model", "baseline__model")
        .filter(model=model, pk=rollout_id)
        .first()
    )
