"""The simulated accelerator served end to end: registered like any version (its model card's
framework "simulated"), loaded by a real worker child, called with Triton's client over the
Open Inference Protocol's binary tensors, answering deterministically after its kernel's sleep."""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from inference_project.local_platform import tensor_socket
from inference_project.redis_clients import redis_sync
from tests.conftest import ROOT
from tests.integration.conftest import Platform, platform_env, running_platform
from workers.training.simulated import simulated_write

KERNEL_MS = 40.0


@pytest.fixture(scope="module")
def accel(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Platform]:
    """The platform with `accel` (8x8x3 FP32 in, 10 scores out) deployed before it starts."""
    root = tmp_path_factory.mktemp("accel")
    card = simulated_write(out=root / "model", name="accel", batch_ms=KERNEL_MS, input_shape=(8, 8, 3))
    assert card["framework"] == "simulated"
    # Batches over 1 KB (two images) send their tensors beside the task: to the API's 4 KB of
    # shared memory when they fit, else to the tensor Redis.
    env = platform_env(
        root,
        demo_model_dir,
        WORKER_CONCURRENCY="1",
        START_PROMETHEUS="false",
        INFERENCE_TENSOR_OFFLOAD_BYTES="1024",
        INFERENCE_TENSOR_SHM_BYTES="4096",
    )
    for command in (["migrate", "--noinput"], ["register_model", str(root / "model"), "--deploy", "dev"]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True
        )
    with running_platform(root, env, "simulated-accelerator") as platform:
        yield platform


def infer(platform: Platform, firsts: list[int]) -> tuple[np.ndarray, float]:
    """Triton's HTTP client, binary tensors: one 8x8x3 image per value of `firsts` (its first
    pixel); the scores and the seconds the call took."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(platform.base_url.removeprefix("http://"))
    images = np.zeros((len(firsts), 8, 8, 3), dtype=np.float32)
    images[:, 0, 0, 0] = firsts
    tensor = triton.InferInput("input", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=True)
    output = triton.InferRequestedOutput("scores", binary_data=True)
    started = time.perf_counter()
    result = client.infer("accel", [tensor], outputs=[output], headers=platform.auth)
    return result.as_numpy("scores"), time.perf_counter() - started


def test_triton_client_gets_the_simulated_answers(accel: Platform) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(accel.base_url.removeprefix("http://"))
    assert client.is_model_ready("accel", headers=accel.auth)
    assert client.get_model_metadata("accel", headers=accel.auth)["platform"] == "simulated"
    scores, elapsed = infer(accel, [3, 1, 4, 1])
    np.testing.assert_array_equal(scores, np.array([3, 1, 4, 1])[:, None] + np.arange(10))
    assert elapsed >= KERNEL_MS / 1000  # the worker slept for the kernel


def offloaded(platform: Platform) -> dict[str, float]:
    """inference_offloaded_batches_total by store, from the API's /metrics."""
    with platform.client() as client:
        metrics = client.get("/metrics").text
    found = re.findall(
        r'^inference_offloaded_batches_total\{store="(\w+)"\} ([0-9.e+]+)$', metrics, re.MULTILINE
    )
    fallbacks = re.search(r"^inference_tensor_store_fallbacks_total ([0-9.e+]+)$", metrics, re.MULTILINE)
    return {store: float(value) for store, value in found} | {
        "fallbacks": float(fallbacks[1]) if fallbacks else 0
    }


def test_large_tensors_go_through_shared_memory_then_the_tensor_redis_then_the_broker(
    accel: Platform,
) -> None:
    tensors = redis_sync(f"unix://{tensor_socket(accel.var_dir)}")
    broker = redis_sync(f"redis://127.0.0.1:{accel.env['REDIS_PORT']}/0")

    def sets(client: redis.Redis) -> int:
        """SETs so far on `client`'s Redis (each offloaded tensor is one)."""
        return int(client.info("commandstats").get("cmdstat_set", {"calls": 0})["calls"])

    def answered(firsts: list[int]) -> None:
        scores, _ = infer(accel, firsts)
        np.testing.assert_array_equal(scores, np.array(firsts)[:, None] + np.arange(10))

    assert tensors.config_get("appendonly") == {"appendonly": "no"}
    assert broker.config_get("appendonly") == {"appendonly": "yes"}
    # 4 images (3 KB) fit the API's 4 KB of shared memory: no Redis holds them.
    counts, before = offloaded(accel), (sets(tensors), sets(broker))
    answered([2, 7, 1, 8])
    assert offloaded(accel)["shm"] == counts.get("shm", 0) + 1
    # 8 images (6 KB) do not: the tensor Redis takes them, off the broker's AOF.
    answered(list(range(8)))
    assert offloaded(accel)["tensor_redis"] == counts.get("tensor_redis", 0) + 1
    assert sets(tensors) == before[0] + 1 and not tensors.keys("inference:tensor:*")  # deleted once answered

    # Its Redis killed: the API stores the tensors on the broker's Redis; circus restarts it.
    on_broker = sets(broker)
    os.kill(accel.pids()["redis-tensors"], signal.SIGKILL)
    for first in range(5):
        answered([first, *range(7)])
    after = offloaded(accel)
    assert after["fallbacks"] >= counts["fallbacks"] + 5 and after["broker"] >= counts.get("broker", 0) + 5
    assert sets(broker) >= on_broker + 5
    deadline = time.monotonic() + 20
    while True:
        try:
            back = sets(tensors)
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the tensor Redis was not restarted"
            time.sleep(0.2)
    answered(list(range(8)))
    assert sets(tensors) == back + 1


def test_readiness_counts_the_simulated_model(accel: Platform) -> None:
    with accel.client() as client:
        models = client.get("/readyz").json()["models"]
    assert models["accel"] == {"version": 1, "ready": True}
    assert models["digits"]["ready"]
