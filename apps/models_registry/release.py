"""Publish the registry's outbox to SNS: the first step of the release pipeline.

Each promotion/rollback wrote an `OutboxEvent` in the same transaction as the change. Here each
pending event goes to the SNS topic of its environment (`RELEASE_SNS_TOPIC_ARNS`), and is marked
published only after SNS accepted it. On a FIFO topic (`.fifo`) the event id is the message
deduplication id, so a publish repeated after a crash between "SNS accepted" and "marked
published" is dropped by SNS. With no topic configured for an environment its events stay in
the outbox, unpublished, and nothing fails.
"""

import json
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.models_registry.models import OutboxEvent

logger = logging.getLogger(__name__)


class PublishFailed(Exception):
    """SNS did not accept one or more events; they stay pending for the next attempt."""


def sns_client() -> Any:
    import boto3

    return boto3.client("sns")


def sns_publish(*, client: Any, topic_arn: str, event: OutboxEvent) -> str:
    payload = event.payload
    message: dict[str, Any] = {
        "TopicArn": topic_arn,
        "Message": json.dumps(payload, sort_keys=True),
        "Subject": f"{payload['action']} {payload['model']} v{payload['version']} @ {payload['environment']}"[
            :100
        ],
        "MessageAttributes": {
            "event_id": {"DataType": "String", "StringValue": str(event.event_id)},
            "environment": {"DataType": "String", "StringValue": payload["environment"]},
            "model": {"DataType": "String", "StringValue": payload["model"]},
        },
    }
    if topic_arn.endswith(".fifo"):
        message["MessageGroupId"] = payload["model"]
        message["MessageDeduplicationId"] = str(event.event_id)
    message_id: str = client.publish(**message)["MessageId"]
    return message_id


def outbox_publish_pending(*, client: Any = None, limit: int = 100) -> int:
    """Publish pending events in order; returns how many SNS accepted. Raises PublishFailed
    (after recording the error on the event) so the caller's retry policy applies."""
    topics: dict[str, str] = settings.RELEASE_SNS_TOPIC_ARNS
    pending = list(
        OutboxEvent.objects.filter(published_at__isnull=True, topic__in=list(topics)).order_by("created_at")[
            :limit
        ]
    )
    if not pending:
        return 0
    client = client or sns_client()
    published = 0
    for event in pending:
        try:
            message_id = sns_publish(client=client, topic_arn=topics[event.topic], event=event)
        except Exception as exc:
            OutboxEvent.objects.filter(pk=event.pk).update(
                attempts=event.attempts + 1, last_error=str(exc)[:2000]
            )
            logger.warning("SNS did not accept event %s: %s", event.event_id, exc)
            raise PublishFailed(f"event {event.event_id}: {exc}") from exc
        with transaction.atomic():
            OutboxEvent.objects.filter(pk=event.pk).update(
                published_at=timezone.now(), attempts=event.attempts + 1, last_error=""
            )
        logger.info("published event %s to %s as %s", event.event_id, topics[event.topic], message_id)
        published += 1
    return published
