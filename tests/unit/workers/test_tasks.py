"""The batch task when Redis fails under it (a primary failing over): the batch goes back on the
queue instead of being acknowledged as failed with its answers unstored."""

import pytest
from celery.backends.redis import RedisBackend
from celery.exceptions import Reject

from inference_project.celery_app import app
from tests.conftest import free_port
from workers.tasks import predict_batch


def test_a_batch_whose_answers_cannot_reach_redis_is_requeued() -> None:
    original = predict_batch.backend
    predict_batch.backend = RedisBackend(app=app, url=f"redis://127.0.0.1:{free_port()}/0")
    batch = {"model": "digits", "version": 1, "parts": [{"id": "r1", "inputs": b""}], "sent": 0.0}
    try:
        with pytest.raises(Reject) as raised:
            predict_batch.run(batch)
    finally:
        predict_batch.backend = original
    # celery-types declare no attributes on Reject: read them as Celery sets them.
    assert vars(raised.value)["requeue"] is True
    assert "back on the queue" in str(vars(raised.value)["reason"])
