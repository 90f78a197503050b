"""Live figures per model version, in Redis: what a rollout's analysis compares.

Every inference worker child adds each batch it answers to the version's current bucket, one
pipelined round trip per batch; the analysis (the platform worker) sums the buckets of a window.
Buckets cover `BUCKET_S` seconds of wall time: `inference:vstats:{environment}:{model}:{version}:
{int(t // BUCKET_S)}`, a hash that expires `TTL_S` after its last write. Its fields:

- `requests`: parts (requests) answered; `errors`: those answered with one of `ERROR_CODES`;
  `rows`: input rows computed;
- `latency_le_<bound>`: how many requests took at most `<bound>` seconds in the worker, cumulative
  over `LATENCY_BOUNDS` (the Prometheus latency buckets, then `+Inf`), each request observed with
  its batch's predict wall time, and `latency_sum` their sum (an exact mean, where the buckets
  only bound a quantile); a request that never reached predict (its version could not load) is
  counted in `requests` and `errors` but has no latency;
- `confidence_sum` / `confidence_rows`: the sum of the top-1 score over rows and how many rows,
  where the output looks like class scores (2-D float with more than one column);
- shadow pairs, added by the API that mirrored a live request to a shadow rollout's candidate
  (on the candidate's key): `pair_rows` rows compared, `pair_agree_rows` those of class scores whose
  top-1 class agrees with live's (out of `pair_class_rows`), and `pair_abs_diff_sum` the sum over
  the other rows of their mean absolute difference from live's (out of `pair_value_rows`).

Clocks: buckets are named by each worker's wall clock, so hosts are assumed NTP-synchronised to
well under a bucket.
"""

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from inference_project.metrics import LATENCY_BUCKETS

BUCKET_S = 5
TTL_S = 3600
LATENCY_BOUNDS: tuple[float, ...] = (*LATENCY_BUCKETS, math.inf)
# Failures that count against a version: it failed at predict or could not be loaded.
ERROR_CODES = frozenset({"predict_failed", "load_failed", "model_unavailable"})


def _bound_field(bound: float) -> str:
    return "latency_le_+Inf" if math.isinf(bound) else f"latency_le_{bound!r}"


_LATENCY_FIELDS = tuple(_bound_field(bound) for bound in LATENCY_BOUNDS)


def version_stats_key(*, environment: str, model: str, version: int, bucket: int) -> str:
    return f"inference:vstats:{environment}:{model}:{version}:{bucket}"


def scores_confidence(scores: np.ndarray) -> tuple[float, int]:
    """(sum of the top-1 score over rows, rows) when `scores` look like class scores; (0, 0)
    otherwise (a regression output, labels, a single logit)."""
    if scores.ndim != 2 or scores.shape[1] < 2 or not np.issubdtype(scores.dtype, np.floating):
        return 0.0, 0
    return float(scores.max(axis=1).sum(dtype=np.float64)), int(scores.shape[0])


PAIR_FIELDS = ("pair_rows", "pair_class_rows", "pair_agree_rows", "pair_value_rows", "pair_abs_diff_sum")
# A row whose difference is not finite (NaN or infinite outputs on one side) counts this much:
# large enough to breach any threshold, finite so the figures stay valid JSON.
PAIR_DIFF_NOT_FINITE = float(np.finfo(np.float32).max)


def pair_compare(live: dict[str, np.ndarray], shadow: dict[str, np.ndarray]) -> dict[str, float]:
    """What one mirrored pair adds to the candidate's bucket: per output both answered with the
    same shape, top-1 agreement per row for class scores, else each row's mean absolute
    difference. An output missing or shaped otherwise counts its live rows as disagreeing."""
    fields = dict.fromkeys(PAIR_FIELDS, 0.0)
    for name, ours in live.items():
        theirs = shadow.get(name)
        rows = int(ours.shape[0]) if ours.ndim else 1
        fields["pair_rows"] += rows
        if scores_confidence(ours)[1]:
            fields["pair_class_rows"] += rows
            if theirs is not None and theirs.shape == ours.shape:
                fields["pair_agree_rows"] += int((ours.argmax(axis=1) == theirs.argmax(axis=1)).sum())
            continue
        numeric = theirs is not None and all(np.issubdtype(a.dtype, np.number) for a in (ours, theirs))
        if theirs is None or theirs.shape != ours.shape or not numeric:
            continue  # nothing to measure a difference on: counted, never agreeing
        diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).reshape(rows, -1)
        fields["pair_value_rows"] += rows
        fields["pair_abs_diff_sum"] += float(
            np.nan_to_num(diff.mean(axis=1), nan=PAIR_DIFF_NOT_FINITE, posinf=PAIR_DIFF_NOT_FINITE).sum()
        )
    return fields


def version_stats_add(
    pipe: Any,
    *,
    environment: str,
    model: str,
    version: int,
    fields: dict[str, float],
    now: float | None = None,
) -> None:
    """Queue on `pipe` (a sync or asyncio Redis pipeline) the increments of `fields` to the
    version's current bucket, and its expiry."""
    bucket = int((time.time() if now is None else now) // BUCKET_S)
    key = version_stats_key(environment=environment, model=model, version=version, bucket=bucket)
    for name, value in fields.items():
        if value:
            pipe.hincrbyfloat(key, name, value)
    pipe.expire(key, TTL_S)


def version_stats_record(
    client: redis.Redis,
    *,
    environment: str,
    model: str,
    version: int,
    requests: int,
    errors: int,
    rows: int,
    latency_s: float | None,
    confidence_sum: float,
    confidence_rows: int,
    now: float | None = None,
) -> None:
    """Add one batch to the version's current bucket: one pipelined round trip. `latency_s`, the
    batch's predict wall time, is observed once per request (None: nothing reached predict)."""
    bucket = int((time.time() if now is None else now) // BUCKET_S)
    key = version_stats_key(environment=environment, model=model, version=version, bucket=bucket)
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(key, "requests", requests)
    if errors:
        pipe.hincrby(key, "errors", errors)
    if rows:
        pipe.hincrby(key, "rows", rows)
    if latency_s is not None and requests:
        # Cumulative: every bound at or above the latency counts these requests.
        for bound, field in zip(LATENCY_BOUNDS, _LATENCY_FIELDS, strict=True):
            if latency_s <= bound:
                pipe.hincrby(key, field, requests)
        pipe.hincrbyfloat(key, "latency_sum", latency_s * requests)
    if confidence_rows:
        pipe.hincrbyfloat(key, "confidence_sum", confidence_sum)
        pipe.hincrby(key, "confidence_rows", confidence_rows)
    pipe.expire(key, TTL_S)
    pipe.execute()


@dataclass(frozen=True)
class VersionStats:
    """A version's figures over a window. `latency_buckets`: (upper bound in seconds, requests
    that took at most that long), cumulative, the last bound `math.inf`."""

    requests: int
    errors: int
    rows: int
    latency_buckets: list[tuple[float, int]]
    confidence_sum: float
    confidence_rows: int
    pair_rows: int = 0
    pair_class_rows: int = 0
    pair_agree_rows: int = 0
    pair_value_rows: int = 0
    pair_abs_diff_sum: float = 0.0
    latency_sum: float = 0.0

    @property
    def mean_latency_s(self) -> float | None:
        """The mean predict time of the requests that reached predict; None without any."""
        return self.latency_sum / self.latency_count if self.latency_count else None

    @property
    def agreement(self) -> float | None:
        """The share of mirrored class-score rows whose top-1 agrees with live's; None without."""
        return self.pair_agree_rows / self.pair_class_rows if self.pair_class_rows else None

    @property
    def mean_abs_diff(self) -> float | None:
        """The mean absolute difference from live's over mirrored rows that are not class scores."""
        return self.pair_abs_diff_sum / self.pair_value_rows if self.pair_value_rows else None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def latency_count(self) -> int:
        """Requests with a latency (those that reached predict)."""
        return self.latency_buckets[-1][1] if self.latency_buckets else 0

    def quantile(self, q: float) -> float | None:
        """The upper bound of the first bucket holding the q-quantile of the latencies (an upper
        estimate; `math.inf` past the largest bound); None without any latency."""
        total = self.latency_count
        if total == 0:
            return None
        rank = q * total
        for bound, count in self.latency_buckets:
            if count >= rank:
                return bound
        return math.inf

    @property
    def p99_s(self) -> float | None:
        return self.quantile(0.99)

    @property
    def mean_confidence(self) -> float | None:
        return self.confidence_sum / self.confidence_rows if self.confidence_rows else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _buckets_fetch(
    client: redis.Redis, *, environment: str, model: str, version: int, since: float, now: float | None
) -> list[tuple[int, dict[str, float]]]:
    """Each bucket from the one holding `since` to the one holding `now` (buckets older than
    `TTL_S` have expired and are not asked for), with its fields as numbers: one round trip."""
    now = time.time() if now is None else now
    last = int(now // BUCKET_S)
    buckets = range(max(int(since // BUCKET_S), last - TTL_S // BUCKET_S), last + 1)
    pipe = client.pipeline(transaction=False)
    for bucket in buckets:
        pipe.hgetall(version_stats_key(environment=environment, model=model, version=version, bucket=bucket))
    found = pipe.execute()
    return [
        (bucket, {_text(k): float(_text(v)) for k, v in fields.items()})
        for bucket, fields in zip(buckets, found, strict=True)
    ]


def _stats_of(totals: dict[str, float]) -> VersionStats:
    """Figures from a bucket's fields, or the sum of several buckets'."""

    def count(name: str) -> int:
        return int(totals.get(name, 0))

    return VersionStats(
        requests=count("requests"),
        errors=count("errors"),
        rows=count("rows"),
        latency_buckets=[
            (bound, count(name)) for bound, name in zip(LATENCY_BOUNDS, _LATENCY_FIELDS, strict=True)
        ],
        confidence_sum=totals.get("confidence_sum", 0.0),
        confidence_rows=count("confidence_rows"),
        pair_rows=count("pair_rows"),
        pair_class_rows=count("pair_class_rows"),
        pair_agree_rows=count("pair_agree_rows"),
        pair_value_rows=count("pair_value_rows"),
        pair_abs_diff_sum=totals.get("pair_abs_diff_sum", 0.0),
        latency_sum=totals.get("latency_sum", 0.0),
    )


def version_stats_read(
    client: redis.Redis,
    *,
    environment: str,
    model: str,
    version: int,
    since: float,
    now: float | None = None,
) -> VersionStats:
    """The version's figures from `since` to `now`, summed over its buckets (one pipelined round
    trip). The bucket holding `since` counts whole: a window starts up to `BUCKET_S` early."""
    totals: dict[str, float] = {}
    for _, fields in _buckets_fetch(
        client, environment=environment, model=model, version=version, since=since, now=now
    ):
        for name, value in fields.items():
            totals[name] = totals.get(name, 0.0) + value
    return _stats_of(totals)


def version_stats_series(
    client: redis.Redis,
    *,
    environment: str,
    model: str,
    version: int,
    since: float,
    now: float | None = None,
) -> list[tuple[float, VersionStats]]:
    """The version's figures per bucket from `since` to `now`, oldest first: (the bucket's start,
    its figures), one entry per `BUCKET_S` seconds, an empty bucket as zeros (for charts). One
    pipelined round trip, over the buckets `version_stats_read` would sum."""
    found = _buckets_fetch(
        client, environment=environment, model=model, version=version, since=since, now=now
    )
    return [(float(bucket * BUCKET_S), _stats_of(fields)) for bucket, fields in found]
