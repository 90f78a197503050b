"""Writes to the registry. Admin actions, REST endpoints and management commands all call these.

Lifecycle: `model_version_register` → `model_version_promote` (dev → staging → prod, gates first)
→ `deployment_rollback`. Every change appends a `RegistryEvent`; promotions and rollbacks also
write an `OutboxEvent` in the same transaction and, once committed, tell the environment's
workers (Redis pub/sub) to load the new version before traffic moves to it.
"""

import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.models_registry import selectors
from apps.models_registry.models import (
    Artifact,
    Deployment,
    ModelVersion,
    OutboxEvent,
    RegisteredModel,
    RegistryEvent,
)
from apps.models_registry.storage import (
    ChecksumMismatch,
    Progress,
    artifact_fetch_verified,
    redis_cache_delete,
    redis_cache_put,
    sha256_file,
    storage_get,
)
from inference_common.deployments import DeploymentChange, deployments_channel
from inference_common.task_names import (
    EVALUATE_GATE_TASK,
    PLATFORM_QUEUE,
    PROFILE_VERSION_TASK,
    PUBLISH_OUTBOX_TASK,
)
from inference_project.celery_app import app as celery_app
from inference_project.redis_clients import redis_sync

logger = logging.getLogger(__name__)

ARTIFACT_KINDS = {
    ".keras": Artifact.Kind.MODEL,
    ".h5": Artifact.Kind.MODEL,
    ".pickle": Artifact.Kind.PREPROCESSING,
    ".pkl": Artifact.Kind.PREPROCESSING,
    ".csv": Artifact.Kind.VALIDATION,
    ".xlsx": Artifact.Kind.VALIDATION,
    ".json": Artifact.Kind.OTHER,
}
COMPANION_KINDS = {Artifact.Kind.PREPROCESSING, Artifact.Kind.VALIDATION, Artifact.Kind.OTHER}

User = AbstractBaseUser | AnonymousUser | None


class PromotionRefused(Exception):
    """A gate failed or the move is not allowed; nothing changed. `report` lists the gates."""

    def __init__(self, message: str, report: "GateReport | None" = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class GateResult:
    name: str
    passed: bool
    detail: str


@dataclass
class GateReport:
    results: list[GateResult] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "gates": [{"name": r.name, "passed": r.passed, "detail": r.detail} for r in self.results],
            "metrics": self.metrics,
        }


def _actor(user: User) -> str:
    return user.get_username() if user is not None and user.is_authenticated else "system"


def _user(user: User) -> AbstractBaseUser | None:
    return user if isinstance(user, AbstractBaseUser) else None


def registry_event_record(
    *,
    model: RegisteredModel,
    action: str,
    version: ModelVersion | None = None,
    environment: str = "",
    from_version: int | None = None,
    user: User = None,
    actor: str | None = None,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> RegistryEvent:
    return RegistryEvent.objects.create(
        model=model,
        version=version,
        action=action,
        environment=environment,
        from_version=from_version,
        to_version=version.number if version else None,
        actor=actor or _actor(user),
        reason=reason,
        details=details or {},
    )


# --- registration ---------------------------------------------------------------------------------


def artifact_kind_for(*, filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in ARTIFACT_KINDS:
        allowed = ", ".join(sorted(ARTIFACT_KINDS))
        raise ValidationError(f"{filename}: extension not allowed (allowed: {allowed})")
    return ARTIFACT_KINDS[suffix]


def signature_validate(*, signature: dict[str, Any]) -> None:
    """A signature names typed tensors; the first dimension of each is the batch (-1)."""
    if not isinstance(signature, dict):
        raise ValidationError("signature must be an object with inputs and outputs")
    for side in ("inputs", "outputs"):
        tensors = signature.get(side)
        if not isinstance(tensors, list) or not tensors:
            raise ValidationError(f"signature.{side} must be a non-empty list")
        for tensor in tensors:
            shape = tensor.get("shape") if isinstance(tensor, dict) else None
            if not isinstance(shape, list) or not tensor.get("name") or not tensor.get("datatype"):
                raise ValidationError(f"signature.{side}: each tensor needs name, datatype, shape")
            if not shape or shape[0] != -1 or not all(isinstance(d, int) for d in shape):
                raise ValidationError(f"signature.{side}.{tensor['name']}: shape must be [-1, ...]")


def model_version_register(
    *,
    name: str,
    files: Iterable[Path],
    signature: dict[str, Any],
    metrics: dict[str, float] | None = None,
    description: str = "",
    gate: dict[str, Any] | None = None,
    batching: dict[str, Any] | None = None,
    notes: str = "",
    user: User = None,
    progress: Progress | None = None,
) -> ModelVersion:
    """Store a new version's artifacts (checksummed) and record it as the model's next version.

    `gate` ({"metric", "minimum"}) configures the promotion gate and `batching`
    ({"max_batch_size", "max_delay_ms"}) the dynamic batching when the model is new; later they
    are changed in the admin, not by whoever uploads a version.
    """
    files = [Path(f) for f in files]
    signature_validate(signature=signature)
    kinds = {path: artifact_kind_for(filename=path.name) for path in files}
    if list(kinds.values()).count(Artifact.Kind.MODEL) != 1:
        raise ValidationError("a version needs exactly one model file (.keras or .h5)")
    if len({p.name for p in files}) != len(files):
        raise ValidationError("artifact file names must be unique")
    checksums = {path: sha256_file(path) for path in files}

    with transaction.atomic():
        defaults: dict[str, Any] = {"description": description}
        if gate:
            defaults.update(gate_metric=gate.get("metric", "accuracy"), gate_minimum=float(gate["minimum"]))
        if batching:
            defaults.update(
                {k: batching[k] for k in ("max_batch_size", "max_delay_ms") if batching.get(k) is not None}
            )
        model, _ = RegisteredModel.objects.get_or_create(name=name, defaults=defaults)
        model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
        latest = model.versions.aggregate(latest=Max("number"))["latest"] or 0
        version = ModelVersion.objects.create(
            model=model,
            number=latest + 1,
            signature=signature,
            metrics=metrics or {},
            notes=notes,
            created_by=_user(user),
        )
        storage = storage_get()
        for path, kind in kinds.items():
            uri = storage.put(key=f"{name}/{version.number}/{path.name}", source=path, progress=progress)
            Artifact.objects.create(
                version=version,
                kind=kind,
                filename=path.name,
                uri=uri,
                size=path.stat().st_size,
                sha256=checksums[path],
            )
        registry_event_record(
            model=model,
            action=RegistryEvent.Action.REGISTER,
            version=version,
            user=user,
            details={"artifacts": {p.name: checksums[p] for p in files}, "metrics": metrics or {}},
        )
    return version


# --- gates ---------------------------------------------------------------------------------------


def gate_checksums(*, version: ModelVersion) -> tuple[GateResult, dict[str, Path]]:
    """Fetch every artifact and check its sha256; returns verified local paths by kind."""
    paths: dict[str, Path] = {}
    try:
        for artifact in version.artifacts.all():
            if artifact.pruned_at:
                return GateResult("checksum", False, f"{artifact.filename} was pruned by retention"), {}
            paths[artifact.kind] = artifact_fetch_verified(uri=artifact.uri, sha256=artifact.sha256)
    except (ChecksumMismatch, OSError) as exc:
        return GateResult("checksum", False, str(exc)), {}
    return GateResult("checksum", True, f"{len(paths)} artifacts match their sha256"), paths


def gate_job(*, version: ModelVersion, paths: dict[str, Path]) -> dict[str, Any]:
    """What `python -m workers.gates` reads: verified local paths and the signature."""
    return {
        "model": str(paths[Artifact.Kind.MODEL]),
        "preprocessing": str(paths[Artifact.Kind.PREPROCESSING])
        if Artifact.Kind.PREPROCESSING in paths
        else None,
        "validation": str(paths[Artifact.Kind.VALIDATION]),
        "signature": version.signature,
    }


def gate_subprocess_run(job: dict[str, Any]) -> dict[str, Any]:
    """Run the gate process; its JSON answer, or {"error"} if it crashed, hung or said so."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "workers.gates"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=settings.PROMOTION_GATE_TIMEOUT_S,
            cwd=settings.BASE_DIR,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {settings.PROMOTION_GATE_TIMEOUT_S}s"}
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {"error": done.stderr[-500:] or "no output"}
    except json.JSONDecodeError:
        result = {"error": lines[-1][-500:]}
    if done.returncode != 0 and "error" not in result:
        result = {"error": f"exit code {done.returncode}: {done.stderr[-500:]}"}
    return result


def _gate_on_platform_worker(version: ModelVersion) -> dict[str, Any]:
    """The API image has no TensorFlow: the platform worker fetches, verifies and evaluates."""
    result = celery_app.send_task(EVALUATE_GATE_TASK, args=[version.pk], queue=PLATFORM_QUEUE)
    deadline = time.monotonic() + settings.PROMOTION_GATE_TIMEOUT_S + 30
    while time.monotonic() < deadline:
        meta = celery_app.backend.get_task_meta(result.id)
        if meta["status"] == "SUCCESS":
            return meta["result"]
        if meta["status"] in {"FAILURE", "REVOKED"}:
            return {"error": f"the gate task failed: {meta.get('result')}"}
        time.sleep(0.2)
    return {"error": "no platform worker answered the gate task in time"}


def gate_evaluate(*, version: ModelVersion, paths: dict[str, Path]) -> tuple[GateResult, dict[str, float]]:
    """Load the version in a separate process and score its validation set.

    PROMOTION_GATE_RUNNER="local" runs that process here; "worker" asks the platform worker.
    """
    if Artifact.Kind.VALIDATION not in paths:
        return GateResult("smoke", False, "the version has no validation set (.csv or .xlsx)"), {}
    if settings.PROMOTION_GATE_RUNNER == "worker":
        result = _gate_on_platform_worker(version)
    else:
        result = gate_subprocess_run(gate_job(version=version, paths=paths))
    if "error" in result:
        return GateResult("smoke", False, f"the model failed to load or predict: {result['error']}"), {}
    reference_store(version=version, result=result)
    detail = f"loaded in {result['load_seconds']}s, answered {result['rows']} validation rows"
    return GateResult("smoke", True, detail), result["metrics"]


def reference_store(*, version: ModelVersion, result: dict[str, Any]) -> bool:
    """Keep the reference statistics a gate run computed, unless the version has them already
    (same model, same validation set: the same numbers)."""
    if version.reference_stats is not None or not result.get("reference"):
        return False
    version.reference_stats = result["reference"]
    version.save(update_fields=["reference_stats"])
    return True


def version_profile(*, version: ModelVersion) -> bool:
    """Compute and store the reference statistics of a version on its validation set, in a
    separate process (the gate's: it loads the model and predicts the whole set)."""
    checksum, paths = gate_checksums(version=version)
    if not checksum.passed or Artifact.Kind.VALIDATION not in paths:
        logger.warning("%s: no reference statistics (%s)", version, checksum.detail)
        return False
    result = gate_subprocess_run(gate_job(version=version, paths=paths))
    if "error" in result:
        logger.warning("%s: no reference statistics: %s", version, result["error"])
        return False
    return reference_store(version=version, result=result)


def version_profile_request(*, version: ModelVersion) -> None:
    """After registration: profile now (PROMOTION_GATE_RUNNER=local) or on the platform worker,
    without waiting for it (=worker: the API image has no TensorFlow)."""
    if not settings.REGISTRY_PROFILE_ON_REGISTER:
        return
    if not version.artifacts.filter(kind=Artifact.Kind.VALIDATION).exists():
        return
    if settings.PROMOTION_GATE_RUNNER == "worker":
        transaction.on_commit(
            lambda: celery_app.send_task(PROFILE_VERSION_TASK, args=[version.pk], queue=PLATFORM_QUEUE)
        )
    else:
        version_profile(version=version)


def gates_run(*, version: ModelVersion) -> GateReport:
    """Checksums, then load + smoke batch in a separate process, then the metric minimum."""
    report = GateReport()
    checksum, paths = gate_checksums(version=version)
    report.results.append(checksum)
    if not report.passed:
        return report
    smoke, metrics = gate_evaluate(version=version, paths=paths)
    report.results.append(smoke)
    report.metrics = metrics
    if not smoke.passed:
        return report
    model = version.model
    value = metrics.get(model.gate_metric)
    if value is None:
        report.results.append(GateResult("metric", False, f"metric {model.gate_metric!r} not computed"))
    else:
        passed = value >= model.gate_minimum
        relation = ">=" if passed else "<"
        report.results.append(
            GateResult(
                "metric", passed, f"{model.gate_metric} {value:.4f} {relation} minimum {model.gate_minimum}"
            )
        )
    return report


# --- promotion and rollback ---------------------------------------------------------------------


def environment_next(*, version: ModelVersion) -> str:
    """The environment after the furthest one this version has been promoted to."""
    environments = settings.INFERENCE_ENVIRONMENTS
    reached = selectors.model_version_environments(version=version)
    furthest = max((environments.index(e) for e in reached if e in environments), default=-1)
    if furthest + 1 >= len(environments):
        raise PromotionRefused(f"{version} is already in {environments[-1]}, the last environment")
    return environments[furthest + 1]


def _require_permission(user: User, perm: str) -> None:
    if user is not None and not user.has_perm(perm):
        raise PermissionDenied(f"requires the {perm} permission")


def model_version_promote(
    *,
    version: ModelVersion,
    environment: str | None = None,
    user: User = None,
    reason: str = "",
) -> Deployment:
    """Run the gates, then make `version` live in `environment` (default: the next one).

    Environments are passed in order; skipping one needs a superuser and a written reason.
    A failed gate changes nothing: it is recorded and `PromotionRefused` carries the report.
    `user=None` means a trusted caller (a management command run by an operator).
    """
    _require_permission(user, "models_registry.promote_deployment")
    environments = settings.INFERENCE_ENVIRONMENTS
    target = environment or environment_next(version=version)
    if target not in environments:
        raise ValidationError(f"unknown environment {target!r} (known: {environments})")
    reached = selectors.model_version_environments(version=version)
    furthest = max((environments.index(e) for e in reached if e in environments), default=-1)
    skipped = environments[furthest + 1 : environments.index(target)]
    if skipped:
        if user is not None and not user.is_superuser:
            raise PermissionDenied(f"skipping {', '.join(skipped)} to reach {target} requires a superuser")
        if not reason.strip():
            raise ValidationError(
                f"skipping {', '.join(skipped)} to reach {target} requires a written reason"
            )

    report = gates_run(version=version)
    if not report.passed:
        registry_event_record(
            model=version.model,
            action=RegistryEvent.Action.GATE_FAILED,
            version=version,
            environment=target,
            user=user,
            reason=reason,
            details=report.as_dict(),
        )
        failed = ", ".join(f"{r.name}: {r.detail}" for r in report.results if not r.passed)
        raise PromotionRefused(f"{version} was not promoted to {target}: {failed}", report)
    return _deployment_switch(
        version=version,
        environment=target,
        user=user,
        action=RegistryEvent.Action.PROMOTE,
        reason=reason,
        details=report.as_dict(),
    )


def deployment_rollback(
    *, model: RegisteredModel, environment: str, user: User = None, reason: str = ""
) -> Deployment:
    """Make the previous version live again (checksums verified first)."""
    _require_permission(user, "models_registry.rollback_deployment")
    deployment = selectors.deployment_get_active(model_name=model.name, environment=environment)
    if deployment is None or deployment.previous_version is None:
        raise PromotionRefused(f"{model.name} has no previous version to roll back to in {environment}")
    target = deployment.previous_version
    checksum, _ = gate_checksums(version=target)
    if not checksum.passed:
        registry_event_record(
            model=model,
            action=RegistryEvent.Action.GATE_FAILED,
            version=target,
            environment=environment,
            user=user,
            reason="rollback",
            details={"gates": [checksum.__dict__]},
        )
        raise PromotionRefused(f"cannot roll back to {target}: {checksum.detail}")
    return _deployment_switch(
        version=target,
        environment=environment,
        user=user,
        action=RegistryEvent.Action.ROLLBACK,
        reason=reason,
    )


def release_event_payload(
    *, event_id: uuid.UUID, action: str, deployment: Deployment, actor: str
) -> dict[str, Any]:
    """The message the release pipeline publishes (SNS) and the Lambda handler validates."""
    version = deployment.version
    return {
        "event_id": str(event_id),
        "action": action,
        "model": version.model.name,
        "version": version.number,
        "previous_version": deployment.previous_version.number if deployment.previous_version else None,
        "environment": deployment.environment,
        "artifacts": [
            {"filename": a.filename, "kind": a.kind, "uri": a.uri, "sha256": a.sha256, "size": a.size}
            for a in version.artifacts.all()
        ],
        "actor": actor,
        "occurred_at": timezone.now().isoformat(),
    }


def _deployment_switch(
    *,
    version: ModelVersion,
    environment: str,
    user: User,
    action: str,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> Deployment:
    model = version.model
    with transaction.atomic():
        current = Deployment.objects.select_for_update().filter(model=model, environment=environment).first()
        previous = current.version if current else None
        if previous == version:
            raise PromotionRefused(f"{version} is already live in {environment}")
        deployment, _ = Deployment.objects.update_or_create(
            model=model,
            environment=environment,
            defaults={"version": version, "previous_version": previous, "deployed_by": _user(user)},
        )
        registry_event_record(
            model=model,
            action=action,
            version=version,
            environment=environment,
            from_version=previous.number if previous else None,
            user=user,
            reason=reason,
            details=details,
        )
        event_id = uuid.uuid4()
        OutboxEvent.objects.create(
            event_id=event_id,
            topic=environment,
            payload=release_event_payload(
                event_id=event_id, action=action, deployment=deployment, actor=_actor(user)
            ),
        )
        transaction.on_commit(lambda: _after_switch(deployment=deployment, previous=previous))
    return deployment


def _after_switch(*, deployment: Deployment, previous: ModelVersion | None) -> None:
    """Once committed: refresh the companion cache, tell workers, apply retention.

    Each step stands alone: the registry change is already committed, and workers also pick it up
    from the API's routing (they load a version on its first request).
    """
    version = deployment.version
    try:
        _companions_cache_refresh(version=version, previous=previous)
    except (redis.RedisError, OSError, ChecksumMismatch):
        logger.exception("companion cache not refreshed for %s", deployment)
    change = DeploymentChange(
        model=version.model.name, version=version.number, environment=deployment.environment
    )
    try:
        redis_sync().publish(deployments_channel(deployment.environment), change.encode())
    except (redis.RedisError, OSError):
        logger.exception("could not notify workers of %s", deployment)
    if deployment.environment in settings.RELEASE_SNS_TOPIC_ARNS:
        try:
            celery_app.send_task(PUBLISH_OUTBOX_TASK, queue=PLATFORM_QUEUE)
        except Exception:  # the beat sweep publishes it later
            logger.exception("could not schedule the outbox publication")
    artifacts_prune(model=deployment.model)


def _companions_cache_refresh(*, version: ModelVersion, previous: ModelVersion | None) -> None:
    for artifact in version.artifacts.filter(kind__in=COMPANION_KINDS, pruned_at__isnull=True):
        redis_cache_put(
            sha256=artifact.sha256, path=artifact_fetch_verified(uri=artifact.uri, sha256=artifact.sha256)
        )
    if previous is None or previous == version or Deployment.objects.filter(version=previous).exists():
        return
    current = set(version.artifacts.values_list("sha256", flat=True))
    stale = [a.sha256 for a in previous.artifacts.filter(kind__in=COMPANION_KINDS) if a.sha256 not in current]
    redis_cache_delete(sha256s=stale)


def artifacts_prune(*, model: RegisteredModel) -> list[int]:
    """Remove stored bytes of versions deployed nowhere, beyond the newest N such versions."""
    live = set(Deployment.objects.filter(model=model).values_list("version_id", flat=True))
    live |= set(
        Deployment.objects.filter(model=model, previous_version__isnull=False).values_list(
            "previous_version_id", flat=True
        )
    )
    idle = [v for v in model.versions.order_by("-number") if v.pk not in live]
    pruned = []
    storage = storage_get()
    for version in idle[settings.ARTIFACT_RETENTION_VERSIONS :]:
        artifacts = list(version.artifacts.filter(pruned_at__isnull=True))
        if not artifacts:
            continue
        for artifact in artifacts:
            storage.delete(uri=artifact.uri)
        redis_cache_delete(sha256s=[a.sha256 for a in artifacts])
        version.artifacts.filter(pk__in=[a.pk for a in artifacts]).update(pruned_at=timezone.now())
        registry_event_record(
            model=model,
            action=RegistryEvent.Action.PRUNE,
            version=version,
            actor="retention",
            details={"artifacts": [a.uri for a in artifacts]},
        )
        pruned.append(version.number)
    return pruned


def deployment_set(*, version: ModelVersion, environment: str, user: User = None) -> Deployment:
    """Deploy without gates: only for bootstrapping a fresh installation (the demo model)."""
    if environment not in settings.INFERENCE_ENVIRONMENTS:
        raise ValidationError(
            f"unknown environment {environment!r} (known: {settings.INFERENCE_ENVIRONMENTS})"
        )
    return _deployment_switch(
        version=version,
        environment=environment,
        user=user,
        action=RegistryEvent.Action.PROMOTE,
        reason="bootstrap deployment without gates",
    )


def deployment_rollout_record(
    *,
    model: RegisteredModel,
    environment: str,
    version_number: int,
    user: User = None,
    details: dict[str, Any] | None = None,
) -> RegistryEvent:
    """The release pipeline reports that `version_number` is rolled out in `environment`.

    Refused (PromotionRefused) when that version is no longer the live one there: a later
    promotion or rollback superseded the build that reports.
    """
    _require_permission(user, "models_registry.promote_deployment")
    deployment = selectors.deployment_get_active(model_name=model.name, environment=environment)
    if deployment is None or deployment.version.number != version_number:
        live = deployment.version.number if deployment else None
        raise PromotionRefused(f"{model.name} v{version_number} is not live in {environment} (live: {live})")
    return registry_event_record(
        model=model,
        action=RegistryEvent.Action.ROLLED_OUT,
        version=deployment.version,
        environment=environment,
        user=user,
        details=details or {},
    )
