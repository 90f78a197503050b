"""INFERENCE_ASYNC_REPLICAS: an async job is answered only once a replica holds what was written
before it (the WAIT in apps/predictions/services.py), else 503 with Retry-After; against a real
primary with a real replica (`--replicaof`), and a lone redis-server."""

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pytest_django import Settings

from apps.predictions import results
from apps.predictions.errors import ApiError
from apps.predictions.services import JOB_PREFIX, _job_replicated
from tests.conftest import _wait_port, free_port


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(primary URL, replica URL), the replica in sync before the tests start."""
    folder: Path = tmp_path_factory.mktemp("replicated")
    ports = [free_port(), free_port()]
    procs = []
    for port, extra in ((ports[0], []), (ports[1], ["--replicaof", "127.0.0.1", str(ports[0])])):
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(folder),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
        )
        _wait_port(port, proc, "redis-server")
        procs.append(proc)
    replica = redis.Redis(port=ports[1])
    deadline = time.monotonic() + 10
    while replica.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{ports[0]}/0", f"redis://127.0.0.1:{ports[1]}/0"
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def fresh_waiters(monkeypatch: pytest.MonkeyPatch) -> None:
    # One waiter per event loop, keyed by the loop's id: each asyncio.run here gets its own.
    monkeypatch.setattr(results, "_waiters", {})


def test_the_job_is_answered_once_the_replica_holds_what_came_before(
    settings: Settings, replicated: tuple[str, str]
) -> None:
    primary, replica = replicated
    settings.REDIS_URL = primary
    settings.INFERENCE_ASYNC_REPLICAS = 1
    # Written on another connection just before, as kombu publishes the job's message.
    redis.Redis.from_url(primary).lpush("inference.replicas-probe", b"message")
    asyncio.run(_job_replicated(task_id="t-1", job='{"owner": "k"}'))
    copy = redis.Redis.from_url(replica)
    assert copy.get(JOB_PREFIX + "t-1") == b'{"owner": "k"}'
    assert copy.lrange("inference.replicas-probe", 0, -1) == [b"message"]


def test_without_a_replica_the_job_is_refused_with_retry_after(settings: Settings, redis_server: str) -> None:
    settings.REDIS_URL = redis_server
    settings.INFERENCE_ASYNC_REPLICAS = 1
    settings.INFERENCE_ASYNC_REPLICA_TIMEOUT_MS = 100
    started = time.monotonic()
    with pytest.raises(ApiError) as refused:
        asyncio.run(_job_replicated(task_id="t-2", job="{}"))
    assert refused.value.status == 503 and refused.value.headers["Retry-After"]
    assert "0 of 1 replicas" in refused.value.message
    assert 0.09 < time.monotonic() - started < 1.0  # the WAIT's own timeout, not a hang
