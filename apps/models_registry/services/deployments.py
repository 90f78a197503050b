"""What serves where: promotion (gates first), rollback, the bootstrap deployment and the
release pipeline's rollout reports.

Environments are passed in order (`INFERENCE_ENVIRONMENTS`, dev → staging → prod). A switch
changes the `Deployment`, records the event and writes the release event to the outbox in one
transaction; once committed it refreshes the companion cache, tells the environment's workers
(Redis pub/sub) to load the new version before traffic moves to it, asks for the outbox to be
published and applies retention.
"""

import logging
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.models_registry import selectors
from apps.models_registry.models import (
    Artifact,
    Deployment,
    ModelVersion,
    RegisteredModel,
    RegistryEvent,
    Rollout,
)
from apps.models_registry.services.actors import (
    User,
    actor_account,
    actor_permission_require,
    actor_superuser_require,
)
from apps.models_registry.services.events import (
    registry_event_record,
    release_event_write,
    release_events_publish_request,
)
from apps.models_registry.services.gates import GateReport, gate_checksums, gates_run
from apps.models_registry.services.retention import artifacts_prune
from apps.models_registry.storage import (
    ChecksumMismatch,
    artifact_fetch_verified,
    redis_cache_delete,
    redis_cache_put,
)
from inference_common.deployments import DeploymentChange, deployments_channel
from inference_common.readiness import serving_workers_sync
from inference_project.redis_clients import redis_sync

logger = logging.getLogger(__name__)

# Small files every worker of a live version reads: kept in Redis by sha256 (storage.py).
COMPANION_KINDS = {
    Artifact.Kind.PREPROCESSING,
    Artifact.Kind.VALIDATION,
    Artifact.Kind.SIGNATURE,
    Artifact.Kind.OTHER,
}


class PromotionRefused(Exception):
    """A gate failed or the move is not allowed; nothing changed. `report` lists the gates."""

    def __init__(self, message: str, report: GateReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class LiveVersionChanged(PromotionRefused):
    """The caller acted on what it saw live (`expect_live`), and something else is live now."""


# `expect_live` not given: act on whatever is live.
ANY_LIVE = -1


def environment_passed(*, version: ModelVersion, environment: str) -> bool:
    """Whether `version` went through `environment`: it is live there now, or it was and a
    promotion of a newer version replaced it. Not if it was rolled back out (for cause), nor if
    an older version was promoted over it."""
    for tenure in selectors.environment_tenures(model=version.model, environment=environment):
        if tenure.version != version.number:
            continue
        if tenure.ended_by is None:
            return True
        if tenure.ended_by == RegistryEvent.Action.PROMOTE and (tenure.successor or 0) > version.number:
            return True
    return False


def _environments_passed(*, version: ModelVersion) -> int:
    """The index of the furthest environment `version` went through (-1: none)."""
    environments: list[str] = settings.INFERENCE_ENVIRONMENTS
    passed = [i for i, e in enumerate(environments) if environment_passed(version=version, environment=e)]
    return max(passed, default=-1)


def environment_next(*, version: ModelVersion) -> str:
    """The environment after the furthest one this version went through (docs/registry.md)."""
    environments: list[str] = settings.INFERENCE_ENVIRONMENTS
    furthest = _environments_passed(version=version)
    if furthest + 1 >= len(environments):
        raise PromotionRefused(f"{version} is already in {environments[-1]}, the last environment")
    return environments[furthest + 1]


def environments_skipped(*, version: ModelVersion, environment: str) -> list[str]:
    """The environments before `environment` that `version` would skip: those after the
    furthest one it went through."""
    environments: list[str] = settings.INFERENCE_ENVIRONMENTS
    return environments[_environments_passed(version=version) + 1 : environments.index(environment)]


def last_good_version(
    *, model: RegisteredModel, environment: str, before_live: bool = False
) -> ModelVersion | None:
    """The last good version of `model` in `environment`: of the versions live there, the latest
    one a worker served since it was last rolled back out of it (if ever). The one notion behind
    a rollback's target (`before_live`: other than the version live now, so a second rollback
    goes further back, never forward), the automatic rollback of a version that cannot load, and
    what serves while the live version cannot (`Deployment.last_good_version`)."""
    tenures = selectors.environment_tenures(model=model, environment=environment)
    good: dict[int, bool] = {}
    for tenure in tenures:
        if tenure.served:
            good[tenure.version] = True
        if tenure.ended_by == RegistryEvent.Action.ROLLBACK:
            good[tenure.version] = False
    live = tenures[-1].version if tenures else None
    for tenure in reversed(tenures):
        if good.get(tenure.version) and not (before_live and tenure.version == live):
            return selectors.model_version_get(model_name=model.name, number=tenure.version)
    return None


def gates_require(
    *,
    version: ModelVersion,
    environment: str,
    user: User,
    actor: str | None,
    reason: str,
    move: str = "promoted",
) -> GateReport:
    """Run the gates of `version` for `environment`; the report when they passed. A failed gate
    is recorded (GATE_FAILED, with the report) and `PromotionRefused` carries the report:
    "{version} was not {move} to {environment}: ..." (a promotion, a rollout's start)."""
    report = gates_run(version=version, environment=environment)
    if not report.passed:
        registry_event_record(
            model=version.model,
            action=RegistryEvent.Action.GATE_FAILED,
            version=version,
            environment=environment,
            user=user,
            actor=actor,
            reason=reason,
            details=report.as_dict(),
        )
        failed = ", ".join(f"{r.name}: {r.detail}" for r in report.results if not r.passed)
        raise PromotionRefused(f"{version} was not {move} to {environment}: {failed}", report)
    return report


def model_version_promote(
    *,
    version: ModelVersion,
    environment: str | None = None,
    user: User = None,
    reason: str = "",
    actor: str | None = None,
    expect_live: int | None = ANY_LIVE,
) -> Deployment:
    """Run the gates, then make `version` live in `environment` (default: the next one).

    Environments are passed in order; skipping one needs a superuser and a written reason.
    A failed gate changes nothing: it is recorded and `PromotionRefused` carries the report.
    `user=None` means a trusted caller (a management command run by an operator); `actor`
    names who acts in the history when there is no user (the command's --actor, or OS user).
    `expect_live`: the version number the caller saw live there (None: nothing); when another
    is live by the time of the switch, `LiveVersionChanged` and nothing changes.
    """
    actor_permission_require(user=user, perm="models_registry.promote_deployment")
    environments: list[str] = settings.INFERENCE_ENVIRONMENTS
    target = environment or environment_next(version=version)
    if target not in environments:
        raise ValidationError(f"unknown environment {target!r} (known: {environments})")
    _live_expected(model=version.model, environment=target, expect_live=expect_live)
    skipped = environments_skipped(version=version, environment=target)
    if skipped:
        actor_superuser_require(user=user, what=f"skipping {', '.join(skipped)} to reach {target}")
        if not reason.strip():
            raise ValidationError(
                f"skipping {', '.join(skipped)} to reach {target} requires a written reason"
            )

    report = gates_require(version=version, environment=target, user=user, actor=actor, reason=reason)
    return deployment_switch(
        version=version,
        environment=target,
        user=user,
        action=RegistryEvent.Action.PROMOTE,
        reason=reason,
        details=report.as_dict(),
        actor=actor,
        expect_live=expect_live,
    )


def deployment_rollback(
    *,
    model: RegisteredModel,
    environment: str,
    user: User = None,
    reason: str = "",
    actor: str | None = None,
    expect_live: int | None = ANY_LIVE,
) -> Deployment:
    """Make the last good version before the live one live again (`last_good_version`;
    checksums verified first). `expect_live` as for promotion."""
    actor_permission_require(user=user, perm="models_registry.rollback_deployment")
    _live_expected(model=model, environment=environment, expect_live=expect_live)
    if expect_live == ANY_LIVE:  # the target is computed for what is live now: switch only from it
        current = selectors.deployment_get_active(model_name=model.name, environment=environment)
        expect_live = current.version.number if current else None
    target = last_good_version(model=model, environment=environment, before_live=True)
    if target is None:
        raise PromotionRefused(
            f"{model.name} has nothing to roll back to in {environment}: no earlier version served "
            "there without being rolled back"
        )
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
    return deployment_switch(
        version=target,
        environment=environment,
        user=user,
        action=RegistryEvent.Action.ROLLBACK,
        reason=reason,
        actor=actor,
        expect_live=expect_live,
    )


def deployment_set(
    *, version: ModelVersion, environment: str, user: User = None, actor: str | None = None
) -> Deployment:
    """Deploy without gates: only for bootstrapping a fresh installation (the demo model)."""
    if environment not in settings.INFERENCE_ENVIRONMENTS:
        raise ValidationError(
            f"unknown environment {environment!r} (known: {settings.INFERENCE_ENVIRONMENTS})"
        )
    return deployment_switch(
        version=version,
        environment=environment,
        user=user,
        action=RegistryEvent.Action.PROMOTE,
        reason="bootstrap deployment without gates",
        actor=actor,
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
    actor_permission_require(user=user, perm="models_registry.promote_deployment")
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


AUTO_ROLLBACK_ACTOR = "auto-rollback"


def deployment_load_failure_handle(
    *,
    version: ModelVersion,
    environment: str,
    worker_id: str,
    error: str,
    definite: bool,
    details: dict[str, Any] | None = None,
) -> Deployment | None:
    """A worker could not load `version`: record it, and when `version` is live in
    `environment`, the failure is `definite` (the load itself failed, not a storage outage or a
    slow load), no worker serves it, enough workers failed (one, or two when two or more serve
    the model's other versions) and an earlier version served there, roll back to that last good
    version by itself (INFERENCE_AUTO_ROLLBACK). Returns the new deployment, or None.

    Several workers failing at once roll back once: the switch expects `version` live, so the
    others' attempts find the last good version live and change nothing."""
    registry_event_record(
        model=version.model,
        action=RegistryEvent.Action.LOAD_FAILED,
        version=version,
        environment=environment,
        actor=worker_id,
        details={"error": error, **(details or {})},
    )
    if not (definite and settings.INFERENCE_AUTO_ROLLBACK):
        return None
    good = _auto_rollback_target(version=version, environment=environment)
    if good is None:
        return None
    try:
        switched = deployment_switch(
            version=good,
            environment=environment,
            user=None,
            action=RegistryEvent.Action.ROLLBACK,
            reason=f"automatic: {version} could not load on {worker_id} and serves nowhere: {error}",
            details={
                "automatic": True,
                "worker": worker_id,
                "error": error,
                "failed_version": version.number,
            },
            actor=AUTO_ROLLBACK_ACTOR,
            expect_live=version.number,
        )
    except LiveVersionChanged:
        return None
    logger.warning(
        "%s could not load and serves nowhere: rolled back to its last good version %s in %s",
        version,
        good,
        environment,
    )
    return switched


def _auto_rollback_target(*, version: ModelVersion, environment: str) -> ModelVersion | None:
    """The last good version to roll back to from `version`, or None while it should stay:
    not live there, nothing else ever served, it serves elsewhere, too few workers failed, or
    the last good version's own files no longer match."""
    deployment = selectors.deployment_get_active(model_name=version.model.name, environment=environment)
    good = deployment.last_good_version if deployment else None
    if deployment is None or deployment.version_id != version.pk or good is None or good.pk == version.pk:
        return None
    try:
        if _workers_serving(environment=environment, model=version.model, versions=[version.number]):
            return None  # it loads elsewhere: this worker's trouble, not the version's
        up = _workers_serving(
            environment=environment,
            model=version.model,
            versions=[v.number for v in (deployment.previous_version, good) if v is not None],
        )
    except (redis.RedisError, OSError):
        logger.exception("not rolling %s back: cannot tell whether a worker serves it", version)
        return None
    failed = set(
        RegistryEvent.objects.filter(
            model=version.model,
            action=RegistryEvent.Action.LOAD_FAILED,
            environment=environment,
            to_version=version.number,
            created_at__gte=deployment.deployed_at,
        ).values_list("actor", flat=True)
    )
    # One worker failing may be its host's trouble (a pod without a key, a bad node) while the
    # others are still loading: with two or more workers up, wait for a second one to fail.
    if len(failed) < min(2, max(1, len(up))):
        return None
    checksum, _ = gate_checksums(version=good)
    if not checksum.passed:
        logger.error("not rolling %s back: its last good version %s fails its checksums", version, good)
        return None
    return good


def _workers_serving(*, environment: str, model: RegisteredModel, versions: list[int]) -> set[str]:
    client = redis_sync()
    found: set[str] = set()
    for number in versions:
        found |= serving_workers_sync(client, environment=environment, model=model.name, version=number)
    return found


def deployment_served_record(*, model_name: str, environment: str, version: int, worker_id: str = "") -> bool:
    """A worker loaded `version` while it is live in `environment`: the first report since it
    was made live records it as served (a `served` event) and makes it the deployment's last
    good version. True if this report did."""
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("model", "version")
            .filter(model__name=model_name, environment=environment, version__number=version)
            .first()
        )
        if deployment is None or deployment.served_at is not None:
            return False
        switch = selectors.switch_event_latest(model=deployment.model, environment=environment)
        Deployment.objects.filter(pk=deployment.pk).update(
            served_at=timezone.now(), last_good_version=deployment.version
        )
        registry_event_record(
            model=deployment.model,
            action=RegistryEvent.Action.SERVED,
            version=deployment.version,
            environment=environment,
            actor=worker_id or "worker",
            details={"switch": switch.pk if switch else None},
        )
    return True


def deployment_switch(
    *,
    version: ModelVersion,
    environment: str,
    user: User,
    action: str,
    reason: str = "",
    details: dict[str, Any] | None = None,
    actor: str | None = None,
    expect_live: int | None = ANY_LIVE,
) -> Deployment:
    """The one place a deployment changes. Under the row's lock, so `previous` is what was live
    when the switch happened, and the switch is refused if that is not what the caller saw."""
    model = version.model
    with transaction.atomic():
        current = Deployment.objects.select_for_update().filter(model=model, environment=environment).first()
        previous = current.version if current else None
        _live_check(model=model, environment=environment, live=previous, expect_live=expect_live)
        if previous == version:
            raise PromotionRefused(f"{version} is already live in {environment}")
        deployment, _ = Deployment.objects.update_or_create(
            model=model,
            environment=environment,
            defaults={
                "version": version,
                "previous_version": previous,
                "deployed_by": actor_account(user=user),
                "served_at": None,
            },
        )
        registry_event_record(
            model=model,
            action=action,
            version=version,
            environment=environment,
            from_version=previous.number if previous else None,
            user=user,
            actor=actor,
            reason=reason,
            details=details,
        )
        # Until a worker reports the new version served (even one that served here before: it
        # may not load now), the last good version before it.
        deployment.last_good_version = last_good_version(
            model=model, environment=environment, before_live=True
        )
        deployment.save(update_fields=["last_good_version"])
        release_event_write(action=action, deployment=deployment, user=user, actor=actor)
        _rollouts_supersede(deployment=deployment, action=action, user=user, actor=actor)
        transaction.on_commit(lambda: _after_switch(deployment=deployment, previous=previous))
    return deployment


def _rollouts_supersede(*, deployment: Deployment, action: str, user: User, actor: str | None) -> None:
    """A switch made outside a rollout (a promotion, a rollback, an automatic one) ends the
    rollout running there: it compared its candidate with a version no longer live."""
    running = Rollout.objects.select_for_update().filter(
        model=deployment.model, environment=deployment.environment, state=Rollout.State.RUNNING
    )
    for rollout in running:
        reason = f"superseded: {deployment.version} made live ({action})"
        Rollout.objects.filter(pk=rollout.pk).update(
            state=Rollout.State.ABORTED, ended_at=timezone.now(), reason=reason
        )
        registry_event_record(
            model=deployment.model,
            action=RegistryEvent.Action.ROLLOUT_ABORT,
            version=rollout.candidate,
            environment=deployment.environment,
            from_version=rollout.baseline.number,
            user=user,
            actor=actor,
            reason=reason,
            details={"rollout": rollout.pk, "superseded_by": deployment.version.number},
        )


def _live_expected(*, model: RegisteredModel, environment: str, expect_live: int | None) -> None:
    """Refuse early (before gates or a rollback's checksums) when the caller's view is stale."""
    if expect_live == ANY_LIVE:
        return
    current = selectors.deployment_get_active(model_name=model.name, environment=environment)
    _live_check(
        model=model,
        environment=environment,
        live=current.version if current else None,
        expect_live=expect_live,
    )


def _live_check(
    *, model: RegisteredModel, environment: str, live: ModelVersion | None, expect_live: int | None
) -> None:
    if expect_live in (ANY_LIVE, live.number if live else None):
        return
    seen = f"v{expect_live}" if expect_live is not None else "nothing"
    now = f"v{live.number}" if live else "nothing"
    raise LiveVersionChanged(
        f"{model.name} in {environment} changed since you looked: {now} is live now, not {seen}; "
        "nothing was changed"
    )


def _after_switch(*, deployment: Deployment, previous: ModelVersion | None) -> None:
    """Once committed: refresh the companion cache, tell workers, publish, apply retention.

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
    release_events_publish_request(environment=deployment.environment)
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
