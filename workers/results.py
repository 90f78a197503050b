"""Store the answers of a batch task, one per request, where the API waits for them.

A batch task carries several requests; each request has its own id, and its answer is stored
exactly as Celery stores a task result (`celery-task-meta-<id>`, SET with expiry + PUBLISH), so
the API's waiter, async job lookups and idempotent retries treat it like any task result. All
writes of one batch go in one pipeline: one round trip.
"""

from datetime import UTC, datetime
from typing import Any

from celery.backends.redis import RedisBackend

from inference_common.results import is_cancelled, task_meta


def results_existing(backend: RedisBackend, ids: list[str]) -> tuple[set[str], set[str]]:
    """(answered, cancelled): the ids among `ids` whose result is already stored (a redelivered
    batch skips them), and those of them whose stored result is the API's cancellation (their
    client went away first: skipped too). One MGET, as before cancellations existed."""
    stored = backend.client.mget([backend.get_key_for_task(i) for i in ids])
    answered = {i: value for i, value in zip(ids, stored, strict=True) if value is not None}
    cancelled = {i for i, value in answered.items() if is_cancelled(backend.decode(value).get("result"))}
    return set(answered), cancelled


def results_store(backend: RedisBackend, results: list[tuple[str, dict[str, Any]]]) -> None:
    pipe = backend.client.pipeline(transaction=False)
    done = datetime.now(UTC).isoformat()
    for request_id, result in results:
        key = backend.get_key_for_task(request_id)
        value = backend.encode(task_meta(request_id, result, done=done))
        # celery-types omits `expires`, which KeyValueStoreBackend.__init__ sets (seconds).
        pipe.setex(key, int(backend.expires), value)  # type: ignore[attr-defined]
        pipe.publish(key, value)
    pipe.execute()
