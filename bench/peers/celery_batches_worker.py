"""Alternative batching mechanism, measured by bench/batching_mechanisms.py: batching inside the
worker with celery-batches. The producer sends one task per request (the model's
`max_batch_size` set to 1); this worker buffers up to FLUSH_EVERY messages, or FLUSH_INTERVAL_S
seconds, and runs them as one predict.

    celery -A bench.peers.celery_batches_worker worker -Q inference.digits --prefetch-multiplier 64 -c 1

celery-batches needs a prefetch at least as large as the buffer, and acknowledges the buffered
messages together when it flushes: with late acks, what a killed worker had buffered but not yet
run is redelivered, but prefetching 64 messages per worker also takes them from other workers.
"""

import os
from typing import Any, cast

import django
from celery import Celery
from celery.backends.redis import RedisBackend
from celery.signals import worker_process_init
from celery_batches import Batches

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference_project.settings.local")
django.setup()

from django.conf import settings  # noqa: E402

from inference_common.task_names import PREDICT_BATCH_TASK  # noqa: E402
from workers.results import results_store  # noqa: E402
from workers.runtime import runtime_get, runtime_start  # noqa: E402

app = Celery("celery_batches_peer")
app.config_from_object("django.conf:settings", namespace="CELERY")
FLUSH_EVERY = int(os.environ.get("FLUSH_EVERY", "64"))
FLUSH_INTERVAL_S = float(os.environ.get("FLUSH_INTERVAL_S", "0.002"))


@app.task(base=Batches, name=PREDICT_BATCH_TASK, flush_every=FLUSH_EVERY, flush_interval=FLUSH_INTERVAL_S)
def predict_buffered(requests: list[Any]) -> None:
    """Each buffered message is one request's batch of one part: run them all as one predict."""
    by_version: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for request in requests:
        batch = request.args[0]
        by_version.setdefault((batch["model"], int(batch["version"])), []).extend(batch["parts"])
    for (model, version), parts in by_version.items():
        results_store(
            cast("RedisBackend", app.backend),
            runtime_get().run_batch(parts, model_name=model, version=version),
        )


@worker_process_init.connect
def _load(**_: Any) -> None:
    runtime_start(model_names=settings.INFERENCE_WORKER_MODELS)
