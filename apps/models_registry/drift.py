"""Reference statistics of a version and the drift measures that compare live traffic with them.

Plain NumPy, shared by the gate process (which computes a version's reference on its validation
set), the workers (which compare a sliding window of live requests with it) and the admin page.

Inputs are compared per feature: the first input tensor, one row per example, flattened; a
tensor with more than MAX_FEATURES values per row (an image) is averaged down to FEATURE_GROUPS
groups of neighbouring values first. For each feature the reference keeps mean/std/min/max and
decile bin edges with the share of validation rows in each bin. Predictions are compared by the
share of each predicted class and the distribution of the top score ("confidence").

Measures:
- PSI (population stability index) per feature and over predicted classes:
  sum((live - ref) * ln(live / ref)) over bins; < 0.1 stable, 0.1-0.2 moderate, > 0.2 shifted.
- KS statistic of the confidence distribution: the largest gap between the two CDFs.
- Out of range: a row with any feature outside the reference's [min, max] widened by
  RANGE_TOLERANCE of that feature's range.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_FEATURES = 256
FEATURE_GROUPS = 64
QUANTILES = np.linspace(0.1, 0.9, 9)
CONFIDENCE_EDGES = np.linspace(0.0, 1.0, 11)
RANGE_TOLERANCE = 0.1
PSI_EPSILON = 1e-4
# The alert rules' thresholds (deploy/prometheus/rules/inference.yml), also shown in the admin.
ALERT_PSI = 0.25
ALERT_CONFIDENCE_RATIO = 0.85
ALERT_OUT_OF_RANGE_SHARE = 0.1
# Each worker's latest window, a Redis hash per version: worker id -> window_summary JSON.
SUMMARY_KEY = "inference:drift:{environment}:{model}:{version}"
# How full each worker's window is, a Redis hash per version: worker id -> WindowProgress JSON,
# written at every evaluation, before the window holds enough rows too (the admin says how many
# it has seen and how many it needs).
PROGRESS_KEY = "inference:drift-progress:{environment}:{model}:{version}"


@dataclass(frozen=True)
class WindowProgress:
    """A worker's window of one version: `rows` in it now (at most `window`), `seen` since the
    worker loaded the version, and `min_rows` needed before it is compared and published."""

    rows: int
    seen: int
    min_rows: int
    window: int

    @property
    def ready(self) -> bool:
        return self.rows >= self.min_rows


def features_view(inputs: np.ndarray) -> np.ndarray:
    """(rows, features) float64: each row flattened, averaged into groups if too wide."""
    rows = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
    if rows.shape[1] <= MAX_FEATURES:
        return rows
    groups = np.array_split(np.arange(rows.shape[1]), FEATURE_GROUPS)
    return np.stack([rows[:, g].mean(axis=1) for g in groups], axis=1)


def _padded_edges(edges: list[list[float]]) -> np.ndarray:
    width = max((len(e) for e in edges), default=0)
    padded = np.full((len(edges), width), np.inf)
    for i, e in enumerate(edges):
        padded[i, : len(e)] = e
    return padded


def feature_bins(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value: how many of its feature's edges are <= it. (rows, features) ints."""
    bins: np.ndarray = (x[:, :, None] >= edges[None, :, :]).sum(axis=2)
    return bins


def bin_counts(bins: np.ndarray, n_bins: int) -> np.ndarray:
    """(features, n_bins) counts of the rows' bins per feature."""
    features = bins.shape[1]
    flat = bins + np.arange(features)[None, :] * n_bins
    counts: np.ndarray = np.bincount(flat.ravel(), minlength=features * n_bins).reshape(features, n_bins)
    return counts


def confidence_of(scores: np.ndarray) -> np.ndarray:
    confidence: np.ndarray = np.asarray(scores, dtype=np.float64).max(axis=1)
    return confidence


def is_classifier(scores: np.ndarray) -> bool:
    """Scores of several classes per row (the outputs drift detection understands)."""
    return scores.ndim == 2 and scores.shape[1] > 1


def reference_stats(inputs: np.ndarray, scores: np.ndarray | None) -> dict[str, Any]:
    """What live traffic of this version is compared with; JSON-ready."""
    x = features_view(inputs)
    edges = [np.unique(np.quantile(x[:, f], QUANTILES)).tolist() for f in range(x.shape[1])]
    padded = _padded_edges(edges)
    n_bins = padded.shape[1] + 1
    counts = bin_counts(feature_bins(x, padded), n_bins)
    stats: dict[str, Any] = {
        "rows": len(x),
        "inputs": {
            "features": x.shape[1],
            "grouped": x.shape[1] != np.asarray(inputs).reshape(len(inputs), -1).shape[1],
            "mean": x.mean(axis=0).tolist(),
            "std": x.std(axis=0).tolist(),
            "min": x.min(axis=0).tolist(),
            "max": x.max(axis=0).tolist(),
            "edges": edges,
            "proportions": (counts / len(x)).tolist(),
        },
        "predictions": None,
    }
    if scores is not None and is_classifier(scores):
        classes = np.bincount(scores.argmax(axis=1), minlength=scores.shape[1])
        confidence = confidence_of(scores)
        hist, _ = np.histogram(confidence, bins=CONFIDENCE_EDGES)
        stats["predictions"] = {
            "classes": (classes / len(scores)).tolist(),
            "confidence_edges": CONFIDENCE_EDGES.tolist(),
            "confidence": (hist / len(scores)).tolist(),
            "confidence_mean": float(confidence.mean()),
        }
    return stats


def psi(reference: np.ndarray, live_counts: np.ndarray) -> np.ndarray:
    """PSI along the last axis; `reference` holds proportions, `live_counts` counts."""
    total = live_counts.sum(axis=-1, keepdims=True)
    live = live_counts / np.maximum(total, 1)
    ref = np.clip(reference, PSI_EPSILON, None)
    live = np.clip(live, PSI_EPSILON, None)
    psi_: np.ndarray = ((live - ref) * np.log(live / ref)).sum(axis=-1)
    return psi_


def ks_statistic(reference: np.ndarray, live_counts: np.ndarray) -> float:
    live = live_counts / max(live_counts.sum(), 1)
    return float(np.abs(np.cumsum(live) - np.cumsum(reference)).max())


class Reference:
    """A version's reference statistics as arrays, ready to compare windows against."""

    def __init__(self, stats: dict[str, Any]) -> None:
        inputs = stats["inputs"]
        self.features = int(inputs["features"])
        self.edges = _padded_edges(inputs["edges"])
        self.n_bins = self.edges.shape[1] + 1
        self.proportions = np.zeros((self.features, self.n_bins))
        for f, row in enumerate(inputs["proportions"]):
            self.proportions[f, : len(row)] = row
        self.mean = np.array(inputs["mean"])
        self.std = np.array(inputs["std"])
        low, high = np.array(inputs["min"]), np.array(inputs["max"])
        slack = RANGE_TOLERANCE * (high - low)
        self.low, self.high = low - slack, high + slack
        predictions = stats.get("predictions")
        self.classes = np.array(predictions["classes"]) if predictions else None
        self.confidence = np.array(predictions["confidence"]) if predictions else None
        self.confidence_mean = predictions["confidence_mean"] if predictions else None

    def out_of_range(self, x: np.ndarray) -> np.ndarray:
        """Per row: any feature outside the widened reference range."""
        outside: np.ndarray = ((x < self.low) | (x > self.high)).any(axis=1)
        return outside


def window_summary(reference: Reference, x: np.ndarray, scores: np.ndarray | None) -> dict[str, Any]:
    """Counts of a window of live rows (JSON-ready): what workers publish and the admin adds up."""
    summary: dict[str, Any] = {
        "rows": len(x),
        "bins": bin_counts(feature_bins(x, reference.edges), reference.n_bins).tolist(),
        "sum": x.sum(axis=0).tolist(),
        "sumsq": (x * x).sum(axis=0).tolist(),
        "out_of_range": int(reference.out_of_range(x).sum()),
        "classes": None,
        "confidence": None,
        "confidence_sum": 0.0,
    }
    if reference.classes is not None and scores is not None and len(scores):
        confidence = confidence_of(scores)
        summary["classes"] = np.bincount(scores.argmax(axis=1), minlength=len(reference.classes)).tolist()
        summary["confidence"] = np.histogram(confidence, bins=CONFIDENCE_EDGES)[0].tolist()
        summary["confidence_sum"] = float(confidence.sum())
    return summary


def summaries_merge(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Several workers' windows as one."""
    if not summaries:
        return None
    merged: dict[str, Any] = {
        "rows": sum(s["rows"] for s in summaries),
        "out_of_range": sum(s["out_of_range"] for s in summaries),
        "confidence_sum": sum(s["confidence_sum"] for s in summaries),
    }
    for key in ("bins", "sum", "sumsq", "classes", "confidence"):
        parts = [np.asarray(s[key]) for s in summaries if s.get(key) is not None]
        merged[key] = np.sum(parts, axis=0).tolist() if parts else None
    return merged


def drift_measures(reference: Reference, summary: dict[str, Any]) -> dict[str, Any]:
    """PSI per feature, prediction PSI, confidence KS and mean, out-of-range share of a window."""
    rows = max(summary["rows"], 1)
    feature_psi = psi(reference.proportions, np.asarray(summary["bins"], dtype=np.float64))
    mean = np.asarray(summary["sum"]) / rows
    std = np.sqrt(np.maximum(np.asarray(summary["sumsq"]) / rows - mean**2, 0))
    measures: dict[str, Any] = {
        "rows": summary["rows"],
        "feature_psi": feature_psi.tolist(),
        "input_psi_max": float(feature_psi.max()) if len(feature_psi) else 0.0,
        "live_mean": mean.tolist(),
        "live_std": std.tolist(),
        "out_of_range_share": summary["out_of_range"] / rows,
        "prediction_psi": None,
        "confidence_ks": None,
        "confidence_mean": None,
    }
    ref_classes, ref_confidence = reference.classes, reference.confidence  # both set or both None
    if ref_classes is not None and ref_confidence is not None and summary.get("classes") is not None:
        classes = np.asarray(summary["classes"], dtype=np.float64)
        confidence = np.asarray(summary["confidence"], dtype=np.float64)
        measures["prediction_psi"] = float(psi(ref_classes, classes))
        measures["confidence_ks"] = ks_statistic(ref_confidence, confidence)
        measures["confidence_mean"] = summary["confidence_sum"] / max(confidence.sum(), 1)
    return measures


def drift_findings(reference: Reference, measures: dict[str, Any]) -> list[str]:
    """What the alert rules would say about these measures, in words."""
    findings = []
    if measures["input_psi_max"] > ALERT_PSI:
        worst = int(np.argmax(measures["feature_psi"]))
        findings.append(
            f"input drift: feature {worst} has PSI {measures['input_psi_max']:.2f} (> {ALERT_PSI})"
        )
    if measures["out_of_range_share"] > ALERT_OUT_OF_RANGE_SHARE:
        findings.append(
            f"{measures['out_of_range_share']:.0%} of rows have values outside the reference range"
        )
    if measures["prediction_psi"] is not None and measures["prediction_psi"] > ALERT_PSI:
        findings.append(f"predicted classes shifted: PSI {measures['prediction_psi']:.2f} (> {ALERT_PSI})")
    if (
        measures["confidence_mean"] is not None
        and reference.confidence_mean
        and measures["confidence_mean"] < ALERT_CONFIDENCE_RATIO * reference.confidence_mean
    ):
        findings.append(
            f"confidence dropped: mean {measures['confidence_mean']:.2f} vs {reference.confidence_mean:.2f}"
        )
    return findings
