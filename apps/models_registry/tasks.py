"""Celery tasks of the registry: thin wrappers, run by the platform worker (queue `platform`)."""

from celery import shared_task

from apps.models_registry.release import PublishFailed, outbox_publish_pending

PUBLISH_OUTBOX_TASK = "release.publish_outbox"
PLATFORM_QUEUE = "platform"


@shared_task(
    name=PUBLISH_OUTBOX_TASK,
    autoretry_for=(PublishFailed,),
    retry_backoff=2,
    retry_backoff_max=300,
    max_retries=10,
    acks_late=True,
)
def publish_outbox() -> int:
    return outbox_publish_pending()
