"""What the registry records and announces: its append-only event log and the release outbox.

Every change appends a `RegistryEvent` (who, when, why). A promotion or rollback also writes an
`OutboxEvent`, the release event, in the same transaction as the switch; once committed, the
platform worker is asked to publish it. Publishing to SNS is `apps.models_registry.release`: the
adapter to AWS, as `storage.py` is to S3, with its own client, failure type and retry policy.
"""

import logging
import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.models_registry.models import Deployment, ModelVersion, OutboxEvent, RegisteredModel, RegistryEvent
from apps.models_registry.services.actors import User, actor_name
from inference_common.task_names import PLATFORM_QUEUE, PUBLISH_OUTBOX_TASK
from inference_project.celery_app import app as celery_app

logger = logging.getLogger(__name__)


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
        actor=actor or actor_name(user=user),
        reason=reason,
        details=details or {},
    )


def release_event_payload(
    *,
    event_id: uuid.UUID,
    action: str,
    deployment: Deployment,
    actor: str,
    rollout: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The message the release pipeline publishes (SNS) and the Lambda handler validates.

    A rollout's events (`rollout`: its id, strategy, step, weight, state and the figures a
    decision was made on) name its candidate as `version` and what is live as `previous_version`.
    """
    if rollout is None:
        version = deployment.version
        previous = deployment.previous_version
    else:
        version, previous = rollout["candidate"], deployment.version
    payload: dict[str, Any] = {
        "event_id": str(event_id),
        "action": action,
        "model": version.model.name,
        "version": version.number,
        "previous_version": previous.number if previous else None,
        "environment": deployment.environment,
        "artifacts": [
            {"filename": a.filename, "kind": a.kind, "uri": a.uri, "sha256": a.sha256, "size": a.size}
            for a in version.artifacts.all()
        ],
        "actor": actor,
        # Who signed the version (the trusted key that verified it at upload), null if nobody.
        "signer": version.signer or None,
        "signature_status": version.signature_status,
        "occurred_at": timezone.now().isoformat(),
    }
    if rollout is not None:
        payload["rollout"] = {k: v for k, v in rollout.items() if k != "candidate"}
    return payload


def release_event_write(
    *,
    action: str,
    deployment: Deployment,
    user: User,
    actor: str | None = None,
    rollout: dict[str, Any] | None = None,
) -> OutboxEvent:
    """Put the release event of a switch (or a rollout's step) in the outbox; call it inside the
    transaction that makes the change."""
    event_id = uuid.uuid4()
    return OutboxEvent.objects.create(
        event_id=event_id,
        topic=deployment.environment,
        payload=release_event_payload(
            event_id=event_id,
            action=action,
            deployment=deployment,
            actor=actor or actor_name(user=user),
            rollout=rollout,
        ),
    )


def release_events_publish_request(*, environment: str) -> None:
    """After a committed switch: ask the platform worker to publish the outbox now, where the
    environment has an SNS topic. Best effort: the beat sweep publishes whatever this missed."""
    if environment not in settings.RELEASE_SNS_TOPIC_ARNS:
        return
    try:
        celery_app.send_task(PUBLISH_OUTBOX_TASK, queue=PLATFORM_QUEUE)
    except Exception:
        logger.exception("could not schedule the outbox publication")
