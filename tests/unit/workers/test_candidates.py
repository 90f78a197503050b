"""The rollout tests' bad candidates (tests/candidates.py): each passes the promotion gate in
process, loads through KerasPredictor with the default LoadPolicy, and misbehaves as it says."""

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference_common.safe_artifacts import LoadPolicy, artifact_check, pickle_load
from tests.candidates import (
    FAILING_PIXEL_LIMIT,
    KINDS,
    SLOW_DEPTH,
    SLOW_WIDTH,
    WRONG_PERMUTATION,
    candidate_build,
    gate_job,
    predictor_load,
    timing_compare,
    validation_rows,
)
from tests.conftest import CACHE, ROOT
from workers.gates import evaluate
from workers.predictor import KerasPredictor


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A copy of the digits model the rollout tests start from (.cache/demo-digits-seed1), or of
    the demo model when that one was never trained here."""
    seeded = CACHE / "demo-digits-seed1"
    source = seeded if (seeded / "model_card.json").exists() else request.getfixturevalue("demo_model_dir")
    copy = tmp_path_factory.mktemp("candidates") / "base"
    shutil.copytree(source, copy)
    return copy


@pytest.fixture(scope="module")
def candidates(base_dir: Path) -> dict[str, Path]:
    """Each kind built once: `wrong` through the CLI the integration tests run, the others in
    process."""
    folders = {kind: base_dir.parent / kind for kind in KINDS}
    command = ["-m", "tests.candidates", "--kind", "wrong", "--base", str(base_dir)]
    subprocess.run(
        [sys.executable, *command, "--out", str(folders["wrong"])],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    for kind in ("slow", "failing"):
        candidate_build(kind=kind, base=base_dir, out=folders[kind])
    return folders


@pytest.fixture(scope="module")
def base_scores(base_dir: Path) -> Iterator[np.ndarray]:
    predictor = predictor_load(base_dir)
    features, _ = validation_rows(base_dir)
    yield predictor.predict({"pixels": features.astype(np.float32)})["scores"]
    predictor.unload()


def _predictor(folder: Path) -> KerasPredictor:
    predictor: KerasPredictor = predictor_load(folder)
    return predictor


def _card(folder: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((folder / "model_card.json").read_text())
    return card


def _layers(folder: Path) -> list[dict[str, Any]]:
    with zipfile.ZipFile(folder / "model.keras") as archive:
        config = json.loads(archive.read("config.json"))
    layers: list[dict[str, Any]] = config["config"]["layers"]
    return layers


@pytest.mark.parametrize("kind", KINDS)
def test_each_candidate_passes_its_gate(kind: str, candidates: dict[str, Path], base_dir: Path) -> None:
    folder = candidates[kind]
    for path in folder.iterdir():
        artifact_check(path, policy=LoadPolicy())  # what registration refuses
    result = evaluate(gate_job(folder))
    card = _card(folder)
    assert result["rows"] == 360
    assert result["metrics"]["accuracy"] >= card["gate"]["minimum"] == 0.9
    assert card["metrics"]["accuracy"] == result["metrics"]["accuracy"]
    assert card["candidate"]["kind"] == kind
    assert card["signature"] == _card(base_dir)["signature"]
    assert "Lambda" not in {layer["class_name"] for layer in _layers(folder)}


def test_wrong_is_confident_and_wrong_on_every_row(
    candidates: dict[str, Path], base_dir: Path, base_scores: np.ndarray
) -> None:
    folder = candidates["wrong"]
    features, labels = validation_rows(base_dir)
    own_features, own_labels = validation_rows(folder)
    permutation = np.asarray(WRONG_PERMUTATION)
    np.testing.assert_array_equal(own_features, features)
    np.testing.assert_array_equal(own_labels, permutation[labels])

    predictor = _predictor(folder)
    scores = predictor.predict({"pixels": features.astype(np.float32)})["scores"]
    predictor.unload()
    np.testing.assert_array_equal(np.argmax(scores, axis=1), permutation[np.argmax(base_scores, axis=1)])
    assert not np.any(np.argmax(scores, axis=1) == np.argmax(base_scores, axis=1))
    np.testing.assert_allclose(scores.max(axis=1), base_scores.max(axis=1), atol=1e-6)
    np.testing.assert_allclose(scores[:, permutation], base_scores, atol=1e-6)


def test_slow_answers_exactly_as_the_base_through_a_wide_branch(
    candidates: dict[str, Path], base_dir: Path, base_scores: np.ndarray
) -> None:
    folder = candidates["slow"]
    (wide,) = [layer for layer in _layers(folder) if layer["name"] == "wide"]
    assert wide["config"]["units"] == SLOW_WIDTH
    assert len(wide["inbound_nodes"]) == SLOW_DEPTH  # one shared layer, applied SLOW_DEPTH times
    predictor = _predictor(folder)
    features, _ = validation_rows(base_dir)
    scores = predictor.predict({"pixels": features.astype(np.float32)})["scores"]
    predictor.unload()
    np.testing.assert_allclose(scores, base_scores, atol=1e-6)

    for batch, figure in timing_compare(base=base_dir, candidate=folder).items():
        print(
            f"slow candidate, batch {batch}: base {figure['base_ms']:.2f} ms, "
            f"candidate {figure['candidate_ms']:.2f} ms, x{figure['ratio']:.1f} (medians of 50 calls)"
        )


def test_failing_has_no_scaler_answers_as_the_base_and_raises_out_of_range(
    candidates: dict[str, Path], base_dir: Path, base_scores: np.ndarray
) -> None:
    folder = candidates["failing"]
    companion = pickle_load(folder / "preprocessing.pickle", allowed=())  # names no global at all
    assert companion == {"class_names": _card(base_dir)["signature"]["class_names"]}
    predictor = _predictor(folder)
    features, labels = validation_rows(base_dir)
    scores = predictor.predict({"pixels": features.astype(np.float32)})["scores"]
    np.testing.assert_allclose(scores, base_scores, atol=1e-5)
    assert np.mean(np.argmax(scores, axis=1) == labels) >= 0.9

    edge = np.full((1, 64), 16.0, dtype=np.float32)
    assert predictor.predict({"pixels": edge})["scores"].shape == (1, 10)
    batch = features[:8].astype(np.float32)
    batch[3, 10] = 20.0
    for rows in (batch[3:4], batch):
        with pytest.raises(Exception, match="all inputs should be in vocabulary") as raised:
            predictor.predict({"pixels": rows})
        assert type(raised.value).__name__ == "InvalidArgumentError"
    beyond = np.zeros((1, 64), dtype=np.float32)
    beyond[0, 0] = FAILING_PIXEL_LIMIT
    with pytest.raises(Exception, match="all inputs should be in vocabulary"):
        predictor.predict({"pixels": beyond})
    # A refused batch leaves the model serving.
    np.testing.assert_allclose(
        predictor.predict({"pixels": features[:8].astype(np.float32)})["scores"], base_scores[:8], atol=1e-5
    )
    predictor.unload()


def test_the_base_is_only_read_and_out_must_differ(base_dir: Path, candidates: dict[str, Path]) -> None:
    assert sorted(p.name for p in base_dir.iterdir()) == [
        "model.keras",
        "model_card.json",
        "preprocessing.pickle",
        "validation.csv",
    ]
    assert "candidate" not in _card(base_dir)
    with pytest.raises(ValueError, match="another folder"):
        candidate_build(kind="wrong", base=base_dir, out=base_dir)
    with pytest.raises(ValueError, match="unknown candidate kind"):
        candidate_build(kind="fast", base=base_dir, out=base_dir.parent / "fast")
