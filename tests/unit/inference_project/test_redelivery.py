"""Redelivery under the platform's broker settings, against a real redis-server: an inference
worker's sweep puts back a batch taken longer than its visibility timeout ago, but never a task the
platform worker is running (a gate evaluation takes minutes), whose unacked keys are its own."""

import json
import os
import subprocess
import sys
import time
from typing import Any

import redis
from django.conf import settings
from kombu import Connection

from inference_project import broker

PRINT_OPTIONS = (
    "import django, json; django.setup(); from django.conf import settings; "
    "print(json.dumps(settings.CELERY_BROKER_TRANSPORT_OPTIONS))"
)


def _platform_options() -> dict[str, Any]:
    """The options the platform worker runs with (deploy/bin/worker-platform sets the role)."""
    env = {
        **os.environ,
        "INFERENCE_WORKER_ROLE": "platform",
        "DJANGO_SETTINGS_MODULE": "inference_project.settings.base",
    }
    env.pop("CELERY_VISIBILITY_TIMEOUT_S", None)
    out = subprocess.run(
        [sys.executable, "-c", PRINT_OPTIONS], env=env, capture_output=True, text=True, check=True
    )
    options: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return options


def test_the_roles_defaults() -> None:
    inference = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    platform = _platform_options()
    assert inference["visibility_timeout"] == 6 and platform["visibility_timeout"] == 3600
    assert inference["unacked_restore_interval"] == 1 and inference["unacked_restore_throttle"] == 1
    assert inference["unacked_key"] == "unacked" and platform["unacked_key"] == "unacked.platform"
    assert inference["unacked_mutex_expire"] <= 5


def _take(url: str, queue: str, options: dict[str, Any]) -> tuple[Connection, Any]:
    connection = Connection(url, transport=broker.Transport, transport_options=options)
    simple = connection.SimpleQueue(queue)
    simple.put({"task": queue})
    return connection, simple.get(timeout=2)


def test_a_gate_being_run_is_not_requeued_by_the_inference_workers_sweep(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    # Shortened visibility so the test takes two seconds, not six; every other option is the real one.
    inference = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "visibility_timeout": 1}
    platform_conn, gate = _take(redis_server, "platform", _platform_options())
    batch_conn, _batch = _take(redis_server, "inference.digits", inference)
    time.sleep(1.5)  # both still running, past the inference workers' timeout
    with Connection(redis_server, transport=broker.Transport, transport_options=inference) as sweeper:
        channel = sweeper.default_channel
        assert isinstance(channel, broker.Channel)
        channel.qos.restore_visible(num=100, interval=1)
    # The batch is back on its queue for another worker; the gate is still the platform worker's.
    assert client.llen("inference.digits") == 1 and client.hlen("unacked") == 0
    assert client.llen("platform") == 0 and client.hlen("unacked.platform") == 1
    gate.ack()
    assert client.hlen("unacked.platform") == 0
    for connection in (platform_conn, batch_conn):
        connection.release()
