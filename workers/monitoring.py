"""Unusual values: each worker child compares its recent requests with the version's reference.

A `DriftMonitor` per loaded version keeps the last INFERENCE_DRIFT_WINDOW rows (features as in
`apps.models_registry.drift`, plus the predicted class and confidence). Every
INFERENCE_DRIFT_EVAL_S seconds (when rows arrived), once it holds INFERENCE_DRIFT_MIN_ROWS rows,
it computes the drift measures, sets them as Prometheus gauges (the alert rules in
deploy/prometheus/ read them) and publishes its window's counts to Redis for a minute, where the
admin's drift page adds up the windows of all workers. Each evaluation, before the window is full
enough too, also publishes how many rows the window holds and needs (`drift.WindowProgress`);
both are published again every REPUBLISH_S while no rows arrive, so an idle worker's window stays
on the page as long as the worker holds it.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal

import numpy as np
import orjson
import redis
from prometheus_client import Counter, Gauge

from apps.models_registry import drift

logger = logging.getLogger(__name__)
# Within the Redis keys' minute of life (SummaryPublisher.ttl_s), so they never lapse meanwhile.
REPUBLISH_S = 30.0
# (model, version, progress, summary or None below the minimum): SummaryPublisher, in a worker.
Publish = Callable[[str, int, drift.WindowProgress, dict[str, Any] | None], None]


def _gauge(name: str, text: str, mode: Literal["livemax", "livemin", "livesum"] = "livemax") -> Gauge:
    return Gauge(name, text, ["model", "version"], multiprocess_mode=mode)


INPUT_PSI_MAX = _gauge(
    "inference_drift_input_psi_max", "Largest per-feature PSI of live inputs vs reference."
)
FEATURES_DRIFTED = _gauge(
    "inference_drift_input_features_drifted",
    "Input features whose PSI is above INFERENCE_DRIFT_PSI_THRESHOLD.",
)
PREDICTION_PSI = _gauge(
    "inference_drift_prediction_psi", "PSI of the predicted-class distribution vs reference."
)
CONFIDENCE_KS = _gauge(
    "inference_drift_confidence_ks", "KS statistic of the top-score distribution vs reference."
)
CONFIDENCE_MEAN = _gauge(
    "inference_drift_confidence_mean", "Mean top score of the live window.", mode="livemin"
)
REFERENCE_CONFIDENCE_MEAN = _gauge(
    "inference_drift_reference_confidence_mean", "Mean top score on the validation set.", mode="livemax"
)
OUT_OF_RANGE_SHARE = _gauge(
    "inference_drift_out_of_range_share", "Share of window rows with a feature outside the reference range."
)
WINDOW_ROWS = _gauge("inference_drift_window_rows", "Rows in the drift window.", mode="livesum")
ROWS = Counter("inference_monitored_rows_total", "Rows compared with the reference.", ["model", "version"])
OUT_OF_RANGE = Counter(
    "inference_input_out_of_range_total",
    "Rows with a feature outside the reference range (widened by 10 %).",
    ["model", "version"],
)


class DriftMonitor:
    def __init__(
        self,
        *,
        model: str,
        version: int,
        reference: dict[str, Any],
        window: int,
        min_rows: int,
        eval_s: float,
        psi_threshold: float,
        publish: Publish | None = None,
    ) -> None:
        self.model, self.version = model, version
        self.labels = (model, str(version))
        self.reference = drift.Reference(reference)
        self.window, self.min_rows, self.eval_s = window, min_rows, eval_s
        self.psi_threshold = psi_threshold
        self.publish = publish
        self._x = np.zeros((window, self.reference.features))
        self._scores: np.ndarray | None = None
        self._filled = 0
        self._seen = 0  # rows since the version was loaded here, for the admin's "seen N of M"
        self._next = 0
        self._last_eval = time.monotonic()
        self._unevaluated = False  # rows arrived since the last evaluation
        self._lock = threading.Lock()  # batches add rows; the heartbeat thread evaluates
        self._published: tuple[drift.WindowProgress, dict[str, Any] | None] | None = None
        self._published_at = 0.0
        if self.reference.confidence_mean is not None:
            REFERENCE_CONFIDENCE_MEAN.labels(*self.labels).set(self.reference.confidence_mean)

    def observe(self, inputs: np.ndarray, scores: np.ndarray | None) -> dict[str, Any] | None:
        """Add a batch; returns the measures when this call evaluated the window."""
        if inputs.dtype == object:  # BYTES inputs have no per-feature statistics
            return None
        x = drift.features_view(inputs)
        if x.shape[1] != self.reference.features:
            return None
        ROWS.labels(*self.labels).inc(len(x))
        OUT_OF_RANGE.labels(*self.labels).inc(int(self.reference.out_of_range(x).sum()))
        with self._lock:
            if scores is not None and drift.is_classifier(scores) and self.reference.classes is not None:
                if self._scores is None:
                    self._scores = np.zeros((self.window, scores.shape[1]))
                self._ring_put(self._scores, scores[-self.window :])
            self._ring_put(self._x, x[-self.window :])
            self._next = (self._next + min(len(x), self.window)) % self.window
            self._filled = min(self.window, self._filled + len(x))
            self._seen += len(x)
            self._unevaluated = True
        return self.evaluate_if_due()

    def evaluate_if_due(self) -> dict[str, Any] | None:
        """Evaluate when rows arrived and `eval_s` passed; also called by the worker's heartbeat
        thread, so the last rows of a burst are evaluated without waiting for more traffic.
        Without new rows, the last publication is repeated every REPUBLISH_S."""
        if not self._unevaluated or time.monotonic() - self._last_eval < self.eval_s:
            if self._published is not None and time.monotonic() - self._published_at >= REPUBLISH_S:
                self._publish(*self._published)
            return None
        return self.evaluate()

    def _ring_put(self, ring: np.ndarray, rows: np.ndarray) -> None:
        positions = (self._next + np.arange(len(rows))) % self.window
        ring[positions] = rows

    def evaluate(self) -> dict[str, Any] | None:
        with self._lock:
            self._last_eval = time.monotonic()
            self._unevaluated = False
            filled, seen = self._filled, self._seen
            x = self._x[:filled].copy()
            scores = None if self._scores is None else self._scores[:filled].copy()
        WINDOW_ROWS.labels(*self.labels).set(filled)
        progress = drift.WindowProgress(rows=filled, seen=seen, min_rows=self.min_rows, window=self.window)
        if filled < self.min_rows:
            self._publish(progress, None)
            return None
        summary = drift.window_summary(self.reference, x, scores)
        measures = drift.drift_measures(self.reference, summary)
        INPUT_PSI_MAX.labels(*self.labels).set(measures["input_psi_max"])
        drifted = sum(p > self.psi_threshold for p in measures["feature_psi"])
        FEATURES_DRIFTED.labels(*self.labels).set(drifted)
        OUT_OF_RANGE_SHARE.labels(*self.labels).set(measures["out_of_range_share"])
        if measures["prediction_psi"] is not None:
            PREDICTION_PSI.labels(*self.labels).set(measures["prediction_psi"])
            CONFIDENCE_KS.labels(*self.labels).set(measures["confidence_ks"])
            CONFIDENCE_MEAN.labels(*self.labels).set(measures["confidence_mean"])
        self._publish(progress, summary)
        return measures

    def _publish(self, progress: drift.WindowProgress, summary: dict[str, Any] | None) -> None:
        if self.publish is None:
            return
        self._published, self._published_at = (progress, summary), time.monotonic()
        self.publish(self.model, self.version, progress, summary)


class SummaryPublisher:
    """Writes a worker's window to Redis for the admin's drift page: how full it is, and its
    counts once it holds enough rows (a hash per version each, expiring a minute after the last
    write). One round trip per evaluation, never per request."""

    def __init__(self, client: redis.Redis, *, environment: str, worker_id: str, ttl_s: int = 60) -> None:
        self.client, self.environment, self.worker_id, self.ttl_s = client, environment, worker_id, ttl_s

    def __call__(
        self, model: str, version: int, progress: drift.WindowProgress, summary: dict[str, Any] | None
    ) -> None:
        where = {"environment": self.environment, "model": model, "version": version}
        key, progress_key = drift.SUMMARY_KEY.format(**where), drift.PROGRESS_KEY.format(**where)
        at = time.time()
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(progress_key, self.worker_id, orjson.dumps({**asdict(progress), "at": at}))
            pipe.expire(progress_key, self.ttl_s)
            if summary is None:  # a version loaded again by this worker starts a new window
                pipe.hdel(key, self.worker_id)
            else:
                pipe.hset(key, self.worker_id, orjson.dumps({**summary, "at": at}))
                pipe.expire(key, self.ttl_s)
            pipe.execute()
        except redis.RedisError:
            logger.warning("could not publish the drift window of %s v%s", model, version)
