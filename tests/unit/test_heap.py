"""Frozen heaps (inference_project/heap.py): the API freezes its set-up, a worker child each model
it loads, and a retired model is thawed first so that its cycles are still collected."""

import gc
import subprocess
import sys
import weakref
from typing import Any

import numpy as np
import pytest

from tests.conftest import ROOT
from workers import runtime as runtime_module
from workers.predictor import ModelFiles, Predictor


class Graph:
    """Stands in for a loaded Keras model: objects that refer to each other (a cycle)."""

    def __init__(self) -> None:
        self.self_ref = self


class CyclicPredictor(Predictor):
    def load(self) -> None:
        self.graph: Graph | None = Graph()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs

    def unload(self) -> None:
        self.graph = None


@pytest.fixture
def unfrozen():  # type: ignore[no-untyped-def]
    yield
    gc.unfreeze()


def test_a_retired_version_is_collected_though_its_model_was_frozen(
    redis_server: str, settings: Any, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    settings.REDIS_URL = redis_server

    def build(*, model_name: str, version_number: int, worker_id: str) -> Predictor:
        predictor = CyclicPredictor(ModelFiles(model=ROOT / "none.keras"))
        predictor.load()
        return predictor

    monkeypatch.setattr(runtime_module, "predictor_build", build)
    runtime = runtime_module.ModelRuntime(environment="dev", worker_id="test", max_loaded=1)
    monkeypatch.setattr(runtime, "heartbeat", lambda: None)

    first = runtime.predictor_get(model_name="m", version=1)
    assert isinstance(first, CyclicPredictor) and first.graph is not None
    graph = weakref.ref(first.graph)
    del first
    assert gc.get_freeze_count() > 0  # the loaded model is frozen: full collections skip it

    runtime.predictor_get(model_name="m", version=2)  # evicts and retires version 1
    assert graph() is None  # its cycle was thawed and collected, not kept frozen for good


def test_the_api_freezes_its_set_up_heap() -> None:
    frozen = subprocess.run(
        [sys.executable, "-c", "import gc, inference_project.asgi; print(gc.get_freeze_count())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(frozen.stdout.strip()) > 10_000
