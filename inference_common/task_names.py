"""Celery task and queue names, shared by whoever sends a task and the worker that runs it.

Senders use `celery_app.send_task(NAME, queue=...)` with these names instead of importing the
task functions, so no producer module imports a worker module (or a registry service its own
tasks module).
"""

# Inference (workers/tasks.py): one request per task, and the batch the API sends.
PREDICT_TASK = "inference.predict"
PREDICT_BATCH_TASK = "inference.predict_batch"

# The platform worker (apps/models_registry/tasks.py) consumes this queue.
PLATFORM_QUEUE = "platform"
PUBLISH_OUTBOX_TASK = "release.publish_outbox"
EVALUATE_GATE_TASK = "registry.evaluate_gate"
PROFILE_VERSION_TASK = "registry.profile_version"
ANALYSE_ROLLOUTS_TASK = "registry.analyse_rollouts"
