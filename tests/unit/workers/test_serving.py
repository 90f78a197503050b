"""A batch task in the worker (workers/serving.py, ModelRuntime.batch_run) on the real digits
model and a real redis-server: every part is answered, a model that raises at predict included,
and each batch's figures land in the version's live stats (inference_common/version_stats.py)."""

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from celery.backends.redis import RedisBackend
from pytest_django import Settings

from inference_common.results import Answer, Failure, cancelled_encode, result_decode, task_meta
from inference_common.version_stats import VersionStats, version_stats_read
from inference_common.wire import tensor_encode
from inference_project.celery_app import app
from tests.conftest import Heldout, free_port
from workers import runtime as runtime_module
from workers import serving
from workers.predictor import KerasPredictor, ModelFiles, Predictor
from workers.runtime import ModelRuntime


class RaisesAtPredict(Predictor):
    """Loads, then fails on every batch (a candidate with a bug in its serving code)."""

    def load(self) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("the graph has no kernel for this input")

    def unload(self) -> None:
        pass


@pytest.fixture(scope="module")
def digits(demo_model_dir: Path) -> Iterator[KerasPredictor]:
    card = json.loads((demo_model_dir / "model_card.json").read_text())
    predictor = KerasPredictor(
        ModelFiles(
            model=demo_model_dir / "model.keras",
            preprocessing=demo_model_dir / "preprocessing.pickle",
            signature=card["signature"],
        )
    )
    predictor.load()
    yield predictor
    predictor.unload()


@pytest.fixture
def runtime(
    redis_server: str, settings: Settings, monkeypatch: pytest.MonkeyPatch, digits: KerasPredictor
) -> ModelRuntime:
    """A worker child's runtime on a clean Redis: version 1 is the digits model, version 2
    raises at predict; batch_serve uses it."""
    settings.REDIS_URL = redis_server
    settings.INFERENCE_VERSION_STATS = True
    redis.Redis.from_url(redis_server).flushdb()

    def build(*, model_name: str, version_number: int, worker_id: str) -> Predictor:
        return digits if version_number == 1 else RaisesAtPredict(ModelFiles(model=Path("unused")))

    monkeypatch.setattr(runtime_module, "predictor_build", build)
    loaded = ModelRuntime(environment="dev", worker_id="test:1")
    monkeypatch.setattr(loaded, "heartbeat", lambda: None)
    monkeypatch.setattr(serving, "runtime_get", lambda: loaded)
    return loaded


@pytest.fixture
def backend(redis_server: str) -> RedisBackend:
    return RedisBackend(app=app, url=redis_server)


def parts(heldout: Heldout, *sizes: int, prefix: str = "r") -> list[dict[str, Any]]:
    rows = np.array(heldout[0], dtype=np.float32)
    found, start = [], 0
    for index, size in enumerate(sizes):
        found.append(
            {"id": f"{prefix}{index}", "inputs": {"pixels": tensor_encode(rows[start : start + size])}}
        )
        start += size
    return found


def stats(runtime: ModelRuntime, version: int, since: float) -> VersionStats:
    return version_stats_read(runtime.redis, environment="dev", model="digits", version=version, since=since)


def stored(backend: RedisBackend, request_id: str) -> Answer | Failure:
    meta = backend.get_task_meta(request_id)
    assert meta["status"] == "SUCCESS"
    return result_decode(meta["result"])


def test_a_batch_served_records_its_figures(
    runtime: ModelRuntime, backend: RedisBackend, heldout: Heldout
) -> None:
    since = time.time()
    batch = {"model": "digits", "version": 1, "parts": parts(heldout, 3, 2), "sent": since}

    assert serving.batch_serve(backend, batch, redelivered=False) == {"parts": 2, "computed": 2}

    answers = [stored(backend, f"r{i}") for i in range(2)]
    assert all(isinstance(a, Answer) for a in answers)
    scores = np.concatenate([a.outputs["scores"] for a in answers if isinstance(a, Answer)])
    figures = stats(runtime, 1, since)
    assert (figures.requests, figures.errors, figures.rows, figures.latency_count) == (2, 0, 5, 2)
    assert figures.p99_s is not None and 0 < figures.p99_s <= 60
    confidence = figures.mean_confidence
    assert confidence == pytest.approx(float(scores.max(axis=1).mean()), rel=1e-5)
    assert confidence is not None and 0.5 < confidence <= 1.0

    # A redelivery of the same batch computes nothing, so it adds nothing either.
    serving.batch_serve(backend, batch, redelivered=True)
    assert stats(runtime, 1, since).requests == 2


def test_a_model_that_raises_at_predict_answers_every_part(
    runtime: ModelRuntime, backend: RedisBackend, heldout: Heldout, caplog: pytest.LogCaptureFixture
) -> None:
    since = time.time()
    expected = "digits v2 failed at predict: RuntimeError: the graph has no kernel for this input"

    with caplog.at_level(logging.ERROR, logger="workers.runtime"):
        results = runtime.run_batch(parts(heldout, 1, 4), model_name="digits", version=2)

    assert results == [
        (f"r{i}", {"error": {"code": "predict_failed", "message": expected}}) for i in range(2)
    ]
    assert "digits v2 failed at predict" in caplog.text and "RuntimeError" in caplog.text
    figures = stats(runtime, 2, since)
    assert (figures.requests, figures.errors, figures.error_rate, figures.rows) == (2, 2, 1.0, 5)
    assert figures.mean_confidence is None

    # Through the batch task: each part's stored answer is the failure (the API answers it 500).
    batch = {"model": "digits", "version": 2, "parts": parts(heldout, 2), "sent": since}
    assert serving.batch_serve(backend, batch, redelivered=False) == {"parts": 1, "computed": 1}
    assert stored(backend, "r0") == Failure(code="predict_failed", message=expected)
    assert stats(runtime, 2, since).errors == 3


def test_live_stats_never_fail_a_batch(
    runtime: ModelRuntime,
    backend: RedisBackend,
    heldout: Heldout,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    since = time.time()
    settings.INFERENCE_VERSION_STATS = False
    serving.batch_serve(
        backend, {"model": "digits", "version": 1, "parts": parts(heldout, 1)}, redelivered=False
    )
    assert stats(runtime, 1, since).requests == 0  # turned off: nothing written

    settings.INFERENCE_VERSION_STATS = True
    runtime.redis = redis.Redis(port=free_port(), socket_connect_timeout=1)  # the stats' Redis is down
    with caplog.at_level(logging.WARNING, logger="workers.runtime"):
        batch = {"model": "digits", "version": 1, "parts": parts(heldout, 1, 1, prefix="down")}
        assert serving.batch_serve(backend, batch, redelivered=False) == {"parts": 2, "computed": 2}
    assert isinstance(stored(backend, "down1"), Answer)
    assert "could not record the live stats of digits v1" in caplog.text


def test_a_part_cancelled_before_its_batch_ran_is_skipped_and_kept_cancelled(
    runtime: ModelRuntime, backend: RedisBackend, heldout: Heldout, caplog: pytest.LogCaptureFixture
) -> None:
    """The API stored a cancellation where r1's answer would go (its client went away): the
    worker computes r0 only, in the same lookup of stored results, and logs r1 as cancelled."""
    since = time.time()
    backend.client.set(backend.get_key_for_task("r1"), backend.encode(task_meta("r1", cancelled_encode())))
    batch = {"model": "digits", "version": 1, "parts": parts(heldout, 2, 3), "sent": since}

    with caplog.at_level(logging.INFO, logger="inference.worker"):
        assert serving.batch_serve(backend, batch, redelivered=False) == {"parts": 2, "computed": 1}

    assert isinstance(stored(backend, "r0"), Answer)
    assert stored(backend, "r1") == Failure(code="cancelled", message=cancelled_encode()["error"]["message"])
    assert stats(runtime, 1, since).rows == 2  # r1's three rows never reached predict
    cancelled = [r for r in caplog.records if getattr(r, "status", None) == "cancelled"]
    assert [getattr(r, "request_id", None) for r in cancelled] == ["r1"]
