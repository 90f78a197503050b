"""BYTES inputs end to end: a string-input Keras model served beside the digits model, called
with TF Serving's {"b64": ...}, Open Inference Protocol strings and tritonclient's binary BYTES."""

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CACHE, ROOT
from tests.integration.conftest import Platform, platform_env, running_platform


@pytest.fixture(scope="module")
def words_model_dir() -> Path:
    out = CACHE / "demo-words"
    if not (out / "model_card.json").exists():
        subprocess.run(
            [sys.executable, "-m", "workers.training.words", "--out", str(out)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return out


@pytest.fixture(scope="module")
def two_models(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, words_model_dir: Path
) -> Iterator[Platform]:
    """A platform with `words` registered and deployed before it starts: one worker per model."""
    root = tmp_path_factory.mktemp("bytes")
    env = platform_env(root, demo_model_dir, WORKER_CONCURRENCY="1", START_PROMETHEUS="false")
    for command in (["migrate", "--noinput"], ["register_model", str(words_model_dir), "--deploy", "dev"]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True
        )
    with running_platform(root, env, "bytes-inputs") as platform:
        yield platform


def b64(text: str) -> dict[str, str]:
    return {"b64": base64.b64encode(text.encode()).decode()}


def test_tf_serving_b64_and_v2_strings(two_models: Platform) -> None:
    with two_models.client() as client:
        answer = client.post(
            "/v1/models/words:predict", json={"instances": [[b64("dog")], [b64("plum")], ["blue"]]}
        )
        assert answer.status_code == 200, answer.text
        assert np.argmax(answer.json()["predictions"], axis=1).tolist() == [0, 2, 1]
        bad = client.post("/v1/models/words:predict", json={"instances": [[{"b64": "%%%"}]]})
        assert bad.status_code == 400 and "instances" in bad.json()["error"]
        v2 = client.post(
            "/v2/models/words/infer",
            json={
                "inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": ["cherry", "wolf"]}]
            },
        )
        assert v2.status_code == 200, v2.text
        scores = np.array(v2.json()["outputs"][0]["data"]).reshape(2, 3)
        assert scores.argmax(axis=1).tolist() == [2, 0]
        # The digits model keeps serving beside it, through its own worker.
        digits = client.post("/api/v1/predictions", json={"model": "digits", "inputs": [[0.0] * 64]})
        assert digits.status_code == 200


def test_tritonclient_binary_bytes(two_models: Platform) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(two_models.base_url.removeprefix("http://"))
    words = np.array([[b"tiger"], [b"green"], [b"lemon"]], dtype=object)
    tensor = triton.InferInput("text", list(words.shape), "BYTES")
    tensor.set_data_from_numpy(words, binary_data=True)
    result = client.infer(
        "words",
        [tensor],
        outputs=[triton.InferRequestedOutput("scores", binary_data=True)],
        headers=two_models.auth,
    )
    assert result.as_numpy("scores").argmax(axis=1).tolist() == [0, 1, 2]
