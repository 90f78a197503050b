"""Redis Sentinel configuration: what REDIS_SENTINELS and friends make of the Celery settings, and
the clients redis_clients, kombu and Celery build from them, against a real redis-server watched by
a real `redis-server --sentinel`, both behind passwords."""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel
from celery import Celery
from kombu import Connection
from pytest_django import Settings

from inference_common.priority import PRIORITY_STEPS
from inference_project import broker
from inference_project.celery_backend import ProducerSentinelBackend
from inference_project.local_platform import environment_prepare
from inference_project.redis_clients import redis_async, redis_sync
from tests.conftest import ROOT, _wait_port, free_port

MASTER = "inference"
DATA_PASSWORD = "data/p@ss:word"
SENTINEL_PASSWORD = "sentinel-secret"
PROBED = (
    "CELERY_BROKER_URL",
    "CELERY_BROKER_TRANSPORT",
    "CELERY_BROKER_TRANSPORT_OPTIONS",
    "CELERY_RESULT_BACKEND",
    "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "INFERENCE_PUBLISH_REPLICAS",
    "INFERENCE_PUBLISH_REPLICA_TIMEOUT_MS",
)


def settings_probe(**env: str) -> subprocess.CompletedProcess[str]:
    """The settings module read in a fresh interpreter with only the given Redis variables."""
    probe = (
        "import json, inference_project.settings.base as s; "
        f"print(json.dumps({{name: getattr(s, name) for name in {PROBED!r}}}))"
    )
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("REDIS_", "CELERY_", "INFERENCE_ASYNC_", "INFERENCE_PUBLISH_", "INFERENCE_WORKER_ROLE")
        )
    }
    return subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def settings_read(**env: str) -> dict[str, Any]:
    done = settings_probe(**env)
    assert done.returncode == 0, done.stderr
    values: dict[str, Any] = json.loads(done.stdout)
    return values


def test_sentinels_switch_broker_and_results_to_sentinel_urls_and_options() -> None:
    values = settings_read(
        REDIS_SENTINELS="10.0.0.1:26379, 10.0.0.2:26380,sentinel-3",
        REDIS_SENTINEL_MASTER="mymaster",
        REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD,
        REDIS_PASSWORD=DATA_PASSWORD,
    )
    auth = ":data%2Fp%40ss%3Aword@"  # the data nodes' password, quoted, in every sentinel:// URL
    assert values["REDIS_SENTINELS"] == [["10.0.0.1", 26379], ["10.0.0.2", 26380], ["sentinel-3", 26379]]
    assert values["CELERY_BROKER_URL"] == (
        f"sentinel://{auth}10.0.0.1:26379;sentinel://{auth}10.0.0.2:26380;sentinel://{auth}sentinel-3:26379"
    )
    assert values["CELERY_BROKER_TRANSPORT"] == "inference_project.broker:SentinelTransport"
    sentinel_kwargs = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5, "password": SENTINEL_PASSWORD}
    options = values["CELERY_BROKER_TRANSPORT_OPTIONS"]
    assert options["master_name"] == "mymaster"
    assert options["sentinel_kwargs"] == sentinel_kwargs
    # The redelivery and reliable-pop options stay as they were.
    assert options["visibility_timeout"] == 6 and options["priority_steps"] == PRIORITY_STEPS
    assert values["CELERY_RESULT_BACKEND"] == (
        "inference_project.celery_backend.ProducerSentinelBackend+"
        f"sentinel://{auth}10.0.0.1:26379/0;sentinel://{auth}10.0.0.2:26380/0;sentinel://{auth}sentinel-3:26379/0"
    )
    assert values["CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"] == {
        "master_name": "mymaster",
        "sentinel_kwargs": sentinel_kwargs,
    }


def test_without_a_sentinel_password_the_sentinels_get_only_timeouts() -> None:
    values = settings_read(REDIS_SENTINELS="127.0.0.1:26379", REDIS_SENTINEL_MASTER="m")
    assert values["CELERY_BROKER_URL"] == "sentinel://127.0.0.1:26379"
    assert values["CELERY_BROKER_TRANSPORT_OPTIONS"]["sentinel_kwargs"] == {
        "socket_connect_timeout": 0.5,
        "socket_timeout": 0.5,
    }


def test_unset_nothing_changes() -> None:
    values = settings_read(REDIS_PORT="6390")
    assert values["REDIS_SENTINELS"] == []
    assert values["CELERY_BROKER_URL"] == "redis://127.0.0.1:6390/0"
    assert values["CELERY_BROKER_TRANSPORT"] == "inference_project.broker:Transport"
    assert values["CELERY_RESULT_BACKEND"] == (
        "inference_project.celery_backend.ProducerRedisBackend+redis://127.0.0.1:6390/0"
    )
    assert values["CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"] == {}
    assert "master_name" not in values["CELERY_BROKER_TRANSPORT_OPTIONS"]
    assert values["INFERENCE_PUBLISH_REPLICAS"] == 0


def test_publish_replicas_are_also_read_under_their_earlier_async_names() -> None:
    earlier = settings_read(INFERENCE_ASYNC_REPLICAS="1", INFERENCE_ASYNC_REPLICA_TIMEOUT_MS="250")
    assert (earlier["INFERENCE_PUBLISH_REPLICAS"], earlier["INFERENCE_PUBLISH_REPLICA_TIMEOUT_MS"]) == (
        1,
        250,
    )
    both = settings_read(INFERENCE_ASYNC_REPLICAS="1", INFERENCE_PUBLISH_REPLICAS="2")
    assert both["INFERENCE_PUBLISH_REPLICAS"] == 2  # the current name wins


def test_sentinels_without_a_master_name_or_with_tls_refuse_to_start() -> None:
    no_master = settings_probe(REDIS_SENTINELS="127.0.0.1:26379")
    assert no_master.returncode != 0 and "REDIS_SENTINEL_MASTER" in no_master.stderr
    tls = settings_probe(REDIS_SENTINELS="127.0.0.1:26379", REDIS_SENTINEL_MASTER="m", REDIS_TLS="true")
    assert tls.returncode != 0 and "REDIS_TLS with REDIS_SENTINELS" in tls.stderr


def test_make_run_starts_no_redis_of_its_own_with_sentinels(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    saved = dict(os.environ)  # environment_prepare sets the launcher's defaults in os.environ
    try:
        monkeypatch.setenv("INFERENCE_VAR_DIR", str(tmp_path))
        monkeypatch.setenv("REDIS_SENTINELS", "127.0.0.1:26379")
        monkeypatch.delenv("START_REDIS", raising=False)
        environment_prepare()
        assert os.environ["START_REDIS"] == "false"
        # An explicit choice wins.
        monkeypatch.setenv("START_REDIS", "true")
        environment_prepare()
        assert os.environ["START_REDIS"] == "true"
    finally:
        # monkeypatch's own undo would run after this and put back the START_REDIS=false that
        # environment_prepare wrote (a later platform in the session then started no Redis).
        monkeypatch.undo()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server with a password, watched by one Sentinel (quorum 1) with its own: the
    Sentinel's port."""
    folder = tmp_path_factory.mktemp("sentinel")
    data_port, sentinel_port = free_port(), free_port()
    data = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(data_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--requirepass",
            DATA_PASSWORD,
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
    )
    _wait_port(data_port, data, "redis-server")
    config = folder / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\nrequirepass {SENTINEL_PASSWORD}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {data_port} 1\n"
        f'sentinel auth-pass {MASTER} "{DATA_PASSWORD}"\n'
    )
    watcher = subprocess.Popen(
        ["redis-server", str(config), "--sentinel"], cwd=folder, stdout=subprocess.DEVNULL
    )
    _wait_port(sentinel_port, watcher, "redis-server --sentinel")
    yield sentinel_port
    for proc in (watcher, data):
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def sentinel_settings(settings: Settings, sentinel: int) -> Settings:
    settings.REDIS_SENTINELS = [("127.0.0.1", sentinel)]
    settings.REDIS_SENTINEL_MASTER = MASTER
    settings.REDIS_SENTINEL_KWARGS = {
        "socket_connect_timeout": 0.5,
        "socket_timeout": 0.5,
        "password": SENTINEL_PASSWORD,
    }
    settings.REDIS_PASSWORD = DATA_PASSWORD
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: only the Sentinel leads to Redis
    return settings


def test_redis_clients_are_sentinel_backed(sentinel_settings: Settings) -> None:
    client = redis_sync()
    assert isinstance(client.connection_pool, redis.sentinel.SentinelConnectionPool)
    assert client.set("sentinel-probe", b"sync") and client.get("sentinel-probe") == b"sync"
    assert redis_sync(large_values=True).get("sentinel-probe") == b"sync"
    # An explicit URL still means that URL.
    with pytest.raises(redis.ConnectionError):
        redis_sync("redis://127.0.0.1:1/0").ping()

    async def use() -> bytes | None:
        aclient = redis_async()
        assert isinstance(aclient.connection_pool, redis.asyncio.sentinel.SentinelConnectionPool)
        await aclient.set("sentinel-probe", b"async")
        value = cast("bytes | None", await aclient.get("sentinel-probe"))  # no decode_responses
        await aclient.aclose()
        return value

    assert asyncio.run(use()) == b"async"


def test_a_wrong_sentinel_password_is_refused(sentinel_settings: Settings) -> None:
    sentinel_settings.REDIS_SENTINEL_KWARGS = {"socket_connect_timeout": 0.5, "password": "nope"}
    with pytest.raises(redis.ConnectionError, match="No master found"):
        redis_sync().ping()


def test_broker_and_result_backend_reach_the_master_through_the_sentinel(sentinel: int) -> None:
    auth = ":data%2Fp%40ss%3Aword@"
    url = f"sentinel://{auth}127.0.0.1:{sentinel}"
    options = {"master_name": MASTER, "sentinel_kwargs": {"password": SENTINEL_PASSWORD}}
    with Connection(
        url, transport="inference_project.broker:SentinelTransport", transport_options=options
    ) as conn:
        channel = conn.default_channel
        assert isinstance(channel, broker.SentinelChannel)
        # Our client reuse holds over kombu's Sentinel pool.
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert isinstance(first.connection_pool, redis.sentinel.SentinelConnectionPool)
        queue = conn.SimpleQueue("sentinel-broker-probe")
        queue.put({"n": 1})
        message = queue.get(timeout=2)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()
    app = Celery(
        broker=url,
        backend=f"inference_project.celery_backend.ProducerSentinelBackend+{url}/0",
    )
    app.conf.result_backend_transport_options = options
    backend = app.backend
    assert isinstance(backend, ProducerSentinelBackend)
    backend.set("celery-sentinel-probe", b"1")
    assert backend.get("celery-sentinel-probe") == b"1"
