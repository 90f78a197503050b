"""Frozen heaps (inference_project/heap.py): the API freezes its set-up, a worker child each model
it loads, and a retired model is thawed first so that its cycles are still collected."""

import gc
import subprocess
import sys
import weakref
from collections.abc import Iterator

import numpy as np
import pytest
from pytest_django import Settings

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
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.fixture
def runtime(
    redis_server: str, settings: Settings, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> runtime_module.ModelRuntime:
    """A worker child's runtime (max one loaded version) whose versions are `CyclicPredictor`s."""
    settings.REDIS_URL = redis_server

    def build(*, model_name: str, version_number: int, worker_id: str) -> Predictor:
        predictor = CyclicPredictor(ModelFiles(model=ROOT / "none.keras"))
        predictor.load()
        return predictor

    monkeypatch.setattr(runtime_module, "predictor_build", build)
    loaded = runtime_module.ModelRuntime(environment="dev", worker_id="test", max_loaded=1)
    monkeypatch.setattr(loaded, "heartbeat", lambda: None)
    return loaded


def frozen_graph(runtime: runtime_module.ModelRuntime, version: int) -> weakref.ref[Graph]:
    predictor = runtime.predictor_get(model_name="m", version=version)
    assert isinstance(predictor, CyclicPredictor) and predictor.graph is not None
    assert gc.get_freeze_count() > 0  # the loaded model is frozen: full collections skip it
    return weakref.ref(predictor.graph)


@pytest.fixture
def full_collections() -> Iterator[list[int]]:
    """How many generation-2 collections ran (a worker child's take ~200 ms each)."""
    count = [0]

    def counted(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            count[0] += 1

    gc.callbacks.append(counted)
    yield count
    gc.callbacks.remove(counted)


def test_an_evicted_version_is_collected_in_one_full_pass(
    runtime: runtime_module.ModelRuntime, full_collections: list[int]
) -> None:
    graph = frozen_graph(runtime, 1)
    full_collections[0] = 0
    runtime.predictor_get(model_name="m", version=2)  # evicts and retires version 1
    assert graph() is None  # its cycle was thawed and collected, not kept frozen for good
    assert full_collections[0] == 1  # one pass frees the old version and freezes the new one


@pytest.mark.django_db  # the swap reports the version it made live to the registry
def test_a_version_retired_by_a_swap_is_collected(runtime: runtime_module.ModelRuntime) -> None:
    runtime.max_loaded = 2  # the swap, not the eviction, retires version 1
    graph = frozen_graph(runtime, 1)
    runtime.swap(model_name="m", version=2, grace_s=0, load_timeout_s=60)
    assert runtime.loaded_versions() == [("m", 2)]
    assert graph() is None


def test_the_api_freezes_its_set_up_heap() -> None:
    frozen = subprocess.run(
        [sys.executable, "-c", "import gc, inference_project.asgi; print(gc.get_freeze_count())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(frozen.stdout.strip()) > 10_000
