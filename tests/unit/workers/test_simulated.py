"""The simulated accelerator: registered like any version, asleep for its kernel's time, with
answers a test can compute."""

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytest_django import Settings

from apps.models_registry.services.registration import model_card_register
from inference_common.frameworks import FRAMEWORKS
from inference_common.wire import bytes_array
from workers.predictor import ModelFiles
from workers.runtime import predictor_build
from workers.runtimes import PREDICTORS, predictor_for
from workers.simulated import SimulatedAccelerator
from workers.training.simulated import simulated_write


def loaded(folder: Path, **options: Any) -> SimulatedAccelerator:
    written = simulated_write(out=folder, **options)
    predictor = predictor_for(
        written["framework"], ModelFiles(model=folder / "model.simulated", signature=written["signature"])
    )
    assert isinstance(predictor, SimulatedAccelerator)
    predictor.load()
    return predictor


def test_a_batch_sleeps_for_the_kernel_and_answers_deterministically(tmp_path: Path) -> None:
    predictor = loaded(tmp_path, batch_ms=30.0, row_ms=1.0, input_shape=(4, 4, 3), outputs=3)
    x = np.zeros((10, 4, 4, 3), dtype=np.float32)
    x[:, 0, 0, 0] = np.arange(10)
    wall, cpu = time.perf_counter(), time.process_time()
    scores = predictor.predict({"input": x})["scores"]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert wall >= 0.030 + 0.010  # 30 ms + 1 ms a row for 10 rows
    assert cpu < wall / 4  # asleep, not computing
    assert scores.dtype == np.float32 and scores.shape == (10, 3)
    np.testing.assert_array_equal(scores, np.arange(10)[:, None] + np.arange(3))


def test_bytes_inputs_answer_by_their_first_elements_length(tmp_path: Path) -> None:
    predictor = loaded(tmp_path, batch_ms=0.0, row_ms=0.0, input_shape=(1,), datatype="BYTES", outputs=2)
    scores = predictor.predict({"input": bytes_array([b"ab", b"abcde"], [2, 1])})["scores"]
    np.testing.assert_array_equal(scores, [[2, 3], [5, 6]])


def test_a_kernel_out_of_range_does_not_load(tmp_path: Path) -> None:
    simulated_write(out=tmp_path, batch_ms=-1.0)
    predictor = predictor_for("simulated", ModelFiles(model=tmp_path / "model.simulated"))
    with pytest.raises(ValueError, match="out of range"):
        predictor.load()
    with pytest.raises(RuntimeError, match="not loaded"):
        predictor.predict({"input": np.zeros((1, 1))})


@pytest.mark.django_db
def test_registered_from_its_card_a_worker_loads_it_as_any_version(
    settings: Settings, tmp_path: Path
) -> None:
    """model card → registry (framework "simulated") → the worker's predictor_build → loaded."""
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    settings.ARTIFACT_CACHE_DIR = tmp_path / "cache"
    settings.REGISTRY_PROFILE_ON_REGISTER = False
    folder = tmp_path / "accel"
    simulated_write(out=folder, name="accel", batch_ms=0.0, input_shape=(8,))
    version = model_card_register(files=sorted(folder.iterdir()))
    assert version.framework == "simulated"
    card = json.loads((folder / "model_card.json").read_text())
    assert version.signature == card["signature"]
    predictor = predictor_build(model_name="accel", version_number=version.number, worker_id="test")
    assert isinstance(predictor, SimulatedAccelerator)
    scores = predictor.predict({"input": np.full((2, 8), 7.0, dtype=np.float32)})["scores"]
    assert scores[:, 0].tolist() == [7.0, 7.0]


def test_every_framework_the_registry_accepts_has_a_runtime() -> None:
    assert set(PREDICTORS) == set(FRAMEWORKS)
