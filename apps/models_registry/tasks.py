"""Celery tasks of the registry: thin wrappers, run by the platform worker (queue `platform`)."""

from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings

from apps.models_registry.metrics import rollout_metrics_serve, rollout_metrics_update
from apps.models_registry.models import ModelVersion
from apps.models_registry.release import PublishFailed, outbox_publish_pending
from apps.models_registry.services.gates import gate_checksums, gate_job, gate_subprocess_run
from apps.models_registry.services.profiling import version_profile
from apps.models_registry.services.rollouts import rollouts_analyse
from inference_common.task_names import (
    ANALYSE_ROLLOUTS_TASK,
    EVALUATE_GATE_TASK,
    PROFILE_VERSION_TASK,
    PUBLISH_OUTBOX_TASK,
)


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


@shared_task(name=EVALUATE_GATE_TASK)
def evaluate_gate(version_id: int) -> dict[str, Any]:
    version = ModelVersion.objects.get(pk=version_id)
    checksum, paths = gate_checksums(version=version)
    if not checksum.passed:
        return {"error": checksum.detail}
    return gate_subprocess_run(gate_job(version=version, paths=paths))


@shared_task(name=PROFILE_VERSION_TASK, acks_late=True)
def profile_version(version_id: int) -> bool:
    return version_profile(version=ModelVersion.objects.get(pk=version_id))


@shared_task(name=ANALYSE_ROLLOUTS_TASK, ignore_result=True)
def analyse_rollouts() -> int:
    analysed = rollouts_analyse()
    rollout_metrics_update()
    return analysed


@worker_process_init.connect
def _serve_rollout_metrics(**_: Any) -> tuple[WSGIServer, Thread] | None:
    """The platform worker's pool child runs every analysis (`--concurrency 1`): it serves the
    rollout figures each one leaves."""
    if settings.INFERENCE_WORKER_ROLE != "platform":
        return None
    return rollout_metrics_serve(
        port=settings.INFERENCE_PLATFORM_METRICS_PORT,
        host=settings.INFERENCE_WORKER_METRICS_HOST,
    )
