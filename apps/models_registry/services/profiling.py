"""Reference statistics of a version: its validation set's inputs and its predictions on them,
computed once after registration (by the gate's process) so workers can measure drift against
them (`apps/models_registry/drift.py`)."""

import logging

from django.conf import settings
from django.db import transaction

from apps.models_registry.models import Artifact, ModelVersion
from apps.models_registry.services.gates import (
    gate_checksums,
    gate_job,
    gate_subprocess_run,
    reference_store,
)
from inference_common.task_names import PLATFORM_QUEUE, PROFILE_VERSION_TASK
from inference_project.celery_app import app as celery_app

logger = logging.getLogger(__name__)


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
