"""The simulated accelerator served end to end: registered like any version (its model card's
framework "simulated"), loaded by a real worker child, called with Triton's client over the
Open Inference Protocol's binary tensors, answering deterministically after its kernel's sleep."""

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

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
    env = platform_env(root, demo_model_dir, WORKER_CONCURRENCY="1", START_PROMETHEUS="false")
    for command in (["migrate", "--noinput"], ["register_model", str(root / "model"), "--deploy", "dev"]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True
        )
    with running_platform(root, env, "simulated-accelerator") as platform:
        yield platform


def test_triton_client_gets_the_simulated_answers(accel: Platform) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(accel.base_url.removeprefix("http://"))
    assert client.is_model_ready("accel", headers=accel.auth)
    assert client.get_model_metadata("accel", headers=accel.auth)["platform"] == "simulated"
    images = np.zeros((4, 8, 8, 3), dtype=np.float32)
    images[:, 0, 0, 0] = [3, 1, 4, 1]
    tensor = triton.InferInput("input", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=True)
    output = triton.InferRequestedOutput("scores", binary_data=True)
    started = time.perf_counter()
    result = client.infer("accel", [tensor], outputs=[output], headers=accel.auth)
    elapsed = time.perf_counter() - started
    np.testing.assert_array_equal(result.as_numpy("scores"), np.array([3, 1, 4, 1])[:, None] + np.arange(10))
    assert elapsed >= KERNEL_MS / 1000  # the worker slept for the kernel


def test_readiness_counts_the_simulated_model(accel: Platform) -> None:
    with accel.client() as client:
        models = client.get("/readyz").json()["models"]
    assert models["accel"] == {"version": 1, "ready": True}
    assert models["digits"]["ready"]
