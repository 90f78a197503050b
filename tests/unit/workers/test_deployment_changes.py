"""Deployment changes a worker child hears (inference_common/deployments.py, workers/runtime.py):
a new live version retires the others; a rollout's candidate (retire_others=False) is loaded
beside them and retires nothing."""

import contextlib
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from pytest_django import Settings

from inference_common.deployments import DeploymentChange, deployments_channel
from tests.conftest import _wait_port, free_port
from workers import runtime as runtime_module
from workers.predictor import ModelFiles, Predictor
from workers.runtime import ModelRuntime, deployment_change_apply, deployments_listen

# A swap reports the version it made live to the registry (nothing is live in these tests'
# environments: it records nothing).
pytestmark = pytest.mark.django_db(transaction=True)


class Loaded(Predictor):
    def load(self) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs

    def unload(self) -> None:
        pass


@pytest.fixture
def runtime(redis_server: str, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> ModelRuntime:
    """A worker child's runtime in an environment of its own (no other test publishes on its
    channel), serving digits v1."""
    settings.REDIS_URL = redis_server

    def build(*, model_name: str, version_number: int, worker_id: str) -> Predictor:
        return Loaded(ModelFiles(model=Path("unused")))

    monkeypatch.setattr(runtime_module, "predictor_build", build)
    loaded = ModelRuntime(environment=f"test-{uuid.uuid4().hex[:8]}", worker_id="test:1")
    monkeypatch.setattr(loaded, "heartbeat", lambda: None)
    loaded.predictor_get(model_name="digits", version=1)
    return loaded


def test_a_message_without_retire_others_retires_them() -> None:
    old = DeploymentChange.decode(b'{"model": "digits", "version": 3, "environment": "prod"}')
    assert old == DeploymentChange(model="digits", version=3, environment="prod", retire_others=True)
    candidate = DeploymentChange(model="digits", version=4, environment="prod", retire_others=False)
    assert DeploymentChange.decode(candidate.encode()) == candidate


def test_a_candidate_is_loaded_beside_the_live_version(runtime: ModelRuntime) -> None:
    env = runtime.environment
    candidate = DeploymentChange(model="digits", version=2, environment=env, retire_others=False)
    deployment_change_apply(runtime, candidate, grace_s=0, load_timeout_s=60)
    assert runtime.loaded_versions() == [("digits", 1), ("digits", 2)]

    # Promoted: the candidate becomes the live version and the old one is retired.
    promoted = DeploymentChange(model="digits", version=2, environment=env)
    deployment_change_apply(runtime, promoted, grace_s=0, load_timeout_s=60)
    assert runtime.loaded_versions() == [("digits", 2)]


@pytest.fixture
def listening(
    runtime: ModelRuntime, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[redis.Redis]:
    """The runtime's deployment listener, on a redis-server of its own that stops afterwards:
    its loop runs once (not forever), so the listener ends with the server instead of retrying
    for the rest of the session."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    threads: list[threading.Thread] = []

    def once(name: str, loop: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            with contextlib.suppress(redis.ConnectionError):
                loop()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        threads.append(thread)
        return thread

    try:
        _wait_port(port, server, "redis-server")
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(settings.REDIS_URL)
        monkeypatch.setattr(runtime_module, "_forever", once)
        deployments_listen(runtime, model_names=["digits"], grace_s=0, load_timeout_s=60)
        channel = deployments_channel(runtime.environment)
        deadline = time.monotonic() + 10
        while client.pubsub_numsub(channel)[0][1] < 1:  # subscribed before anything is published
            assert time.monotonic() < deadline, "the listener never subscribed"
            time.sleep(0.02)
        yield client
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_a_candidate_published_on_the_channel_is_loaded_beside(
    runtime: ModelRuntime, listening: redis.Redis
) -> None:
    change = DeploymentChange(model="digits", version=2, environment=runtime.environment, retire_others=False)
    listening.publish(deployments_channel(runtime.environment), change.encode())
    deadline = time.monotonic() + 10
    while runtime.loaded_versions() != [("digits", 1), ("digits", 2)]:
        assert time.monotonic() < deadline, f"still {runtime.loaded_versions()}"
        time.sleep(0.02)
    time.sleep(0.2)  # nothing retires v1 afterwards either
    assert runtime.loaded_versions() == [("digits", 1), ("digits", 2)]
