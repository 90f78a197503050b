"""The Predictor interface on the real demo model, without Celery."""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Heldout
from workers.predictor import KerasPredictor, ModelFiles
from workers.runtimes import predictor_for


@pytest.fixture(scope="module")
def predictor(demo_model_dir: Path) -> Iterator[KerasPredictor]:
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


def test_heldout_accuracy_in_one_batch(predictor: KerasPredictor, heldout: Heldout) -> None:
    rows, labels = heldout
    outputs = predictor.predict({"pixels": np.array(rows, dtype=np.float32)})
    scores = outputs["scores"]
    assert scores.shape == (360, 10)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-4)
    assert np.mean(np.argmax(scores, axis=1) == np.array(labels)) >= 0.95


def test_batches_and_single_rows_agree(predictor: KerasPredictor, heldout: Heldout) -> None:
    rows = np.array(heldout[0][:8], dtype=np.float32)
    batch = predictor.predict({"pixels": rows})["scores"]
    singles = np.concatenate([predictor.predict({"pixels": rows[i : i + 1]})["scores"] for i in range(8)])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_unload_releases_the_model(demo_model_dir: Path) -> None:
    card = json.loads((demo_model_dir / "model_card.json").read_text())
    predictor = KerasPredictor(ModelFiles(model=demo_model_dir / "model.keras", signature=card["signature"]))
    predictor.load()
    predictor.unload()
    with pytest.raises(RuntimeError, match="not loaded"):
        predictor.predict({"pixels": np.zeros((1, 64), dtype=np.float32)})


def test_the_runtime_is_chosen_by_the_versions_framework(tmp_path: Path) -> None:
    files = ModelFiles(model=tmp_path / "model.keras")
    assert isinstance(predictor_for("keras", files), KerasPredictor)
    with pytest.raises(ValueError, match="no runtime for framework 'onnx'"):
        predictor_for("onnx", files)


def test_a_lambda_layer_is_refused_twice_and_loads_only_when_trusted(
    demo_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our config check refuses it; without that check, Keras' safe mode still does; a version a
    superuser trusted (with a reason) loads with safe mode off, and its lambda then runs."""
    from inference_common.safe_artifacts import ArtifactRefused, LoadPolicy
    from tests.hostile import keras_lambda_write
    from workers import predictor as predictor_module

    marker = tmp_path / "ran"
    model = keras_lambda_write(tmp_path / "model.keras", marker=marker)
    marker.unlink(missing_ok=True)
    card = json.loads((demo_model_dir / "model_card.json").read_text())

    def files(policy: LoadPolicy) -> ModelFiles:
        return ModelFiles(model=model, signature=card["signature"], policy=policy)

    with pytest.raises(ArtifactRefused, match="Lambda layer"):
        KerasPredictor(files(LoadPolicy())).load()
    with monkeypatch.context() as unchecked:
        unchecked.setattr(predictor_module, "keras_check", lambda path, allowed_objects=(): None)
        with pytest.raises(ValueError, match="safe_mode"):
            KerasPredictor(files(LoadPolicy())).load()
    assert not marker.exists()

    trusted = KerasPredictor(files(LoadPolicy(unsafe_trusted=True)))
    trusted.load()
    assert marker.exists()  # trusted means its code runs: why trusting takes a superuser and a reason
    trusted.unload()
