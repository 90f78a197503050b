"""Reference statistics and drift measures (apps/models_registry/drift.py) on the digits data."""

import json

import numpy as np
import pytest

from apps.models_registry import drift
from workers.training.digits import dataset_split


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    train, validation, _, _ = dataset_split(seed=0)
    return train, validation


def one_hot_scores(labels: np.ndarray, confidence: float = 0.9) -> np.ndarray:
    scores = np.full((len(labels), 10), (1 - confidence) / 9)
    scores[np.arange(len(labels)), labels] = confidence
    return scores


def test_reference_stats_are_json_and_describe_the_validation_set(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    _, validation = digits
    scores = one_hot_scores(np.arange(len(validation)) % 10)
    stats = json.loads(json.dumps(drift.reference_stats(validation, scores)))
    inputs = stats["inputs"]
    assert stats["rows"] == 360 and inputs["features"] == 64 and not inputs["grouped"]
    assert inputs["min"][0] == inputs["max"][0] == 0.0  # the digits' left-top pixel is always blank
    assert all(abs(sum(p) - 1) < 1e-9 for p in inputs["proportions"])
    assert stats["predictions"]["classes"] == pytest.approx([0.1] * 10)
    assert stats["predictions"]["confidence_mean"] == pytest.approx(0.9)


def test_in_distribution_windows_stay_below_the_alert_and_shifted_ones_go_far_above(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    train, validation = digits
    reference = drift.Reference(drift.reference_stats(validation, None))
    rng = np.random.default_rng(0)
    for _ in range(10):
        window = train[rng.choice(len(train), 1000, replace=False)]
        measures = drift.drift_measures(reference, drift.window_summary(reference, window, None))
        assert measures["input_psi_max"] < 0.15
        assert measures["out_of_range_share"] < drift.ALERT_OUT_OF_RANGE_SHARE
        assert drift.drift_findings(reference, measures) == []
    shifted = 16 - train[:1000]
    measures = drift.drift_measures(reference, drift.window_summary(reference, shifted, None))
    assert measures["input_psi_max"] > 1
    assert measures["out_of_range_share"] == 1.0
    findings = drift.drift_findings(reference, measures)
    assert any(f.startswith("input drift") for f in findings)


def test_prediction_shift_and_confidence_drop_are_found() -> None:
    inputs = np.random.default_rng(1).normal(size=(500, 4))
    labels = np.arange(500) % 10
    reference = drift.Reference(drift.reference_stats(inputs, one_hot_scores(labels, 0.95)))
    same = drift.window_summary(reference, inputs, one_hot_scores(labels, 0.95))
    measures = drift.drift_measures(reference, same)
    assert measures["prediction_psi"] == pytest.approx(0, abs=1e-9)
    assert measures["confidence_ks"] == pytest.approx(0, abs=1e-9)
    assert drift.drift_findings(reference, measures) == []
    unsure_sevens = drift.window_summary(reference, inputs, one_hot_scores(np.full(500, 7), 0.5))
    measures = drift.drift_measures(reference, unsure_sevens)
    assert measures["prediction_psi"] > 1 and measures["confidence_ks"] > 0.9
    assert measures["confidence_mean"] == pytest.approx(0.5)
    findings = " | ".join(drift.drift_findings(reference, measures))
    assert "predicted classes shifted" in findings and "confidence dropped" in findings


def test_windows_of_several_workers_add_up_to_the_whole() -> None:
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(400, 3))
    scores = one_hot_scores(rng.integers(0, 10, 400))
    reference = drift.Reference(drift.reference_stats(inputs, scores))
    whole = drift.window_summary(reference, inputs, scores)
    halves = [
        drift.window_summary(reference, inputs[:150], scores[:150]),
        drift.window_summary(reference, inputs[150:], scores[150:]),
    ]
    merged = drift.summaries_merge(halves)
    assert merged is not None
    for key in ("rows", "out_of_range", "bins", "classes", "confidence"):
        assert merged[key] == whole[key]
    assert merged["sum"] == pytest.approx(whole["sum"])
    assert drift.summaries_merge([]) is None


def test_wide_inputs_are_averaged_into_feature_groups() -> None:
    images = np.random.default_rng(3).random((20, 32, 32, 3)).astype(np.float32)
    view = drift.features_view(images)
    assert view.shape == (20, drift.FEATURE_GROUPS)
    stats = drift.reference_stats(images, None)
    assert stats["inputs"]["grouped"] and stats["predictions"] is None
