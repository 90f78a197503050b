"""Sending a task must not leave a Redis subscription behind in the sending process."""

import redis
from celery import Celery

from inference_project.celery_backend import ProducerRedisBackend


def test_sending_tasks_subscribes_to_nothing(redis_server: str) -> None:
    app = Celery(
        broker=redis_server, backend=f"inference_project.celery_backend.ProducerRedisBackend+{redis_server}"
    )
    assert isinstance(app.backend, ProducerRedisBackend)
    for _ in range(20):
        app.send_task("inference.predict", args=[{}], queue="nobody-consumes-this")
    client = redis.Redis.from_url(redis_server)
    assert client.pubsub_channels("celery-task-meta-*") == []
    assert client.llen("nobody-consumes-this") == 20
    client.delete("nobody-consumes-this")


def test_the_stock_backend_would_have_subscribed(redis_server: str) -> None:
    app = Celery(broker=redis_server, backend=redis_server)
    result = app.send_task("inference.predict", args=[{}], queue="nobody-consumes-this-either")
    client = redis.Redis.from_url(redis_server)
    assert client.pubsub_channels(f"celery-task-meta-{result.id}") != []
    client.delete("nobody-consumes-this-either")
