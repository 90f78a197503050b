"""INFERENCE_PUBLISH_REPLICAS: a publish counts once a replica holds it and what was written before
it (the WAIT of apps/predictions/replication.py); short of replicas, a batch with an async job
is refused with 503 and Retry-After and a sync-only batch goes ahead. Against a real primary with
a real replica (`--replicaof`), and a lone redis-server."""

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from pytest_django import Settings

from apps.predictions import replication
from apps.predictions.errors import ApiError
from apps.predictions.replication import MARK_PREFIX, Replication
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


def confirm(url: str, *, holds_async_job: bool, state: Replication | None = None) -> float:
    """Seconds one confirm took (each asyncio.run has its own loop, so its own client)."""

    async def run() -> None:
        client = aioredis.Redis.from_url(url)
        try:
            await (state or Replication()).confirm(client, mark="api-1", holds_async_job=holds_async_job)
        finally:
            await client.aclose()

    started = time.monotonic()
    asyncio.run(run())
    return time.monotonic() - started


def test_a_publish_counts_once_the_replica_holds_it_and_what_came_before(
    settings: Settings, replicated: tuple[str, str]
) -> None:
    primary, replica = replicated
    settings.INFERENCE_PUBLISH_REPLICAS = 1
    # Written on another connection just before, as kombu publishes the batch's message.
    redis.Redis.from_url(primary).lpush("inference.replicas-probe", b"message")
    confirm(primary, holds_async_job=True)
    copy = redis.Redis.from_url(replica)
    assert copy.lrange("inference.replicas-probe", 0, -1) == [b"message"]
    assert copy.get(MARK_PREFIX + "api-1") == b"1"


def test_short_of_replicas_async_is_refused_sync_goes_ahead_and_the_wait_is_held_off(
    settings: Settings, redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.INFERENCE_PUBLISH_REPLICAS = 1
    settings.INFERENCE_PUBLISH_REPLICA_TIMEOUT_MS = 100
    monkeypatch.setattr(replication, "SHORTFALL_HOLD_S", 0.5)
    state = Replication()
    with pytest.raises(ApiError) as refused:
        confirm(redis_server, holds_async_job=True, state=state)
    assert refused.value.status == 503 and refused.value.headers["Retry-After"]
    assert "0 of 1 replicas" in refused.value.message
    # Within the hold: no WAIT (no timeout paid), sync goes ahead, async is refused at once.
    assert confirm(redis_server, holds_async_job=False, state=state) < 0.09
    started = time.monotonic()
    with pytest.raises(ApiError):
        confirm(redis_server, holds_async_job=True, state=state)
    assert time.monotonic() - started < 0.09
    # After it, the next publish asks again: WAIT's own timeout, not a hang.
    time.sleep(0.5)
    assert 0.09 < confirm(redis_server, holds_async_job=False, state=state) < 1.0


def test_without_replicas_asked_for_nothing_is_sent(settings: Settings) -> None:
    settings.INFERENCE_PUBLISH_REPLICAS = 0
    # Nothing listens there: a WAIT would fail to connect.
    confirm(f"redis://127.0.0.1:{free_port()}/0", holds_async_job=True)
