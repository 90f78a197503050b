"""Per-version live figures (inference_common/version_stats.py) against a real redis-server: what
workers add per batch, and what a rollout's analysis reads back over a window."""

import math
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis

from inference_common.version_stats import (
    BUCKET_S,
    LATENCY_BOUNDS,
    TTL_S,
    VersionStats,
    pair_compare,
    scores_confidence,
    version_stats_add,
    version_stats_key,
    version_stats_read,
    version_stats_record,
)

# A time at the start of a bucket, so that +1 s stays in it and +BUCKET_S is the next one.
T0 = 1_700_000_000.0 - 1_700_000_000.0 % BUCKET_S


@pytest.fixture
def client(redis_server: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server)
    yield connection
    connection.close()


@pytest.fixture
def model() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"  # keys of their own, whatever else the server holds


def record(client: redis.Redis, model: str, version: int, at: float, **figures: Any) -> None:
    values: dict[str, Any] = {
        "requests": 1,
        "errors": 0,
        "rows": 1,
        "latency_s": 0.004,
        "confidence_sum": 0.0,
        "confidence_rows": 0,
        **figures,
    }
    version_stats_record(
        client,
        environment="dev",
        model=model,
        version=version,
        requests=int(values["requests"]),
        errors=int(values["errors"]),
        rows=int(values["rows"]),
        latency_s=values["latency_s"],
        confidence_sum=values["confidence_sum"],
        confidence_rows=int(values["confidence_rows"]),
        now=at,
    )


def read(client: redis.Redis, model: str, version: int, since: float, now: float) -> VersionStats:
    return version_stats_read(client, environment="dev", model=model, version=version, since=since, now=now)


def test_batches_across_two_buckets_add_up_over_the_window(client: redis.Redis, model: str) -> None:
    # Bucket 1: 98 fast requests in 3 batches, one batch of 2 failed; confidence on 40 rows.
    record(
        client, model, 2, T0, requests=50, rows=80, latency_s=0.003, confidence_sum=36.0, confidence_rows=40
    )
    record(client, model, 2, T0 + 1, requests=46, rows=46, latency_s=0.008)
    record(client, model, 2, T0 + 2, requests=2, errors=2, rows=2, latency_s=0.0004)
    # Bucket 2: 2 slow requests, more confidence.
    record(
        client,
        model,
        2,
        T0 + BUCKET_S,
        requests=2,
        rows=4,
        latency_s=0.3,
        confidence_sum=3.0,
        confidence_rows=4,
    )
    # Not in the window: another version, and the same version in an earlier bucket.
    record(client, model, 3, T0 + 1, requests=7, errors=7)
    record(client, model, 2, T0 - BUCKET_S, requests=1000, errors=1000)

    stats = read(client, model, 2, since=T0, now=T0 + BUCKET_S + 1)

    assert (stats.requests, stats.errors, stats.rows) == (100, 2, 132)
    assert stats.error_rate == pytest.approx(0.02)
    assert stats.latency_count == 100
    buckets = dict(stats.latency_buckets)
    assert [bound for bound, _ in stats.latency_buckets] == list(LATENCY_BOUNDS)
    assert (buckets[0.001], buckets[0.005], buckets[0.01], buckets[0.25], buckets[0.5]) == (
        2,
        52,
        98,
        98,
        100,
    )
    assert buckets[math.inf] == 100
    assert stats.quantile(0.5) == 0.005
    assert stats.p99_s == 0.5  # the two slow requests are the top 2 %: p99 lies in (0.25, 0.5]
    assert stats.quantile(0.98) == 0.01
    assert stats.mean_confidence == pytest.approx(39.0 / 44)

    # The window starts at the bucket holding `since`: from the second bucket, only its figures.
    later = read(client, model, 2, since=T0 + BUCKET_S + 0.5, now=T0 + BUCKET_S + 1)
    assert (later.requests, later.errors, later.p99_s, later.mean_confidence) == (2, 0, 0.5, 0.75)
    # Wider: the earlier bucket's failures count too.
    assert read(client, model, 2, since=T0 - BUCKET_S, now=T0 + BUCKET_S).errors == 1002


def test_a_window_without_figures_says_so(client: redis.Redis, model: str) -> None:
    stats = read(client, model, 1, since=T0, now=T0 + 60)
    assert (stats.requests, stats.error_rate, stats.latency_count) == (0, 0.0, 0)
    assert stats.p99_s is None and stats.mean_confidence is None

    # Requests that never reached predict (the version could not load): errors, no latency.
    record(client, model, 1, T0 + 1, requests=3, errors=3, rows=0, latency_s=None)
    failed = read(client, model, 1, since=T0, now=T0 + 60)
    assert (failed.requests, failed.error_rate, failed.latency_count, failed.p99_s) == (3, 1.0, 0, None)


def test_a_latency_past_the_largest_bound_is_infinite(client: redis.Redis, model: str) -> None:
    record(client, model, 1, T0, requests=1, latency_s=90.0)
    stats = read(client, model, 1, since=T0, now=T0)
    assert stats.p99_s == math.inf
    assert dict(stats.latency_buckets)[60.0] == 0


def test_each_bucket_expires(client: redis.Redis, model: str) -> None:
    record(client, model, 1, T0)
    key = version_stats_key(environment="dev", model=model, version=1, bucket=int(T0 // BUCKET_S))
    assert 0 < client.ttl(key) <= TTL_S
    assert client.hget(key, "requests") == b"1"


def test_confidence_is_read_only_from_class_scores() -> None:
    scores = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]], dtype=np.float32)
    total, rows = scores_confidence(scores)
    assert total == pytest.approx(2.1) and rows == 3
    assert scores_confidence(np.array([[0.2], [0.4]], dtype=np.float32)) == (0.0, 0)  # one column
    assert scores_confidence(np.array([1.0, 2.0])) == (0.0, 0)  # 1-D: a regression output
    assert scores_confidence(np.array([[1, 0], [0, 1]])) == (0.0, 0)  # integers: not scores


def test_shadow_pairs_measure_agreement_and_difference(client: redis.Redis, model: str) -> None:
    live = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
    shadow = np.array([[0.7, 0.3], [0.9, 0.1], [0.55, 0.45], [0.1, 0.9]], dtype=np.float32)
    fields = pair_compare(
        {"scores": live, "value": np.array([[1.0], [2.0]])},
        {
            "scores": shadow,
            "value": np.array([[1.5], [2.0]]),
        },
    )
    assert fields["pair_rows"] == 6
    assert (fields["pair_class_rows"], fields["pair_agree_rows"]) == (4, 3)
    assert (fields["pair_value_rows"], fields["pair_abs_diff_sum"]) == (2, 0.5)
    # A missing or reshaped output counts its rows as compared and never agreeing.
    assert pair_compare({"scores": live}, {})["pair_agree_rows"] == 0
    assert pair_compare({"scores": live}, {"scores": shadow[:2]})["pair_class_rows"] == 4
    # NaN on one side is a large, finite difference.
    nan = pair_compare({"value": np.array([[1.0]])}, {"value": np.array([[np.nan]])})
    assert math.isfinite(nan["pair_abs_diff_sum"]) and nan["pair_abs_diff_sum"] > 1e30

    pipe = client.pipeline(transaction=False)
    version_stats_add(pipe, environment="dev", model=model, version=2, fields=fields, now=T0)
    version_stats_add(pipe, environment="dev", model=model, version=2, fields=fields, now=T0 + BUCKET_S)
    pipe.execute()
    stats = version_stats_read(client, environment="dev", model=model, version=2, since=T0, now=T0 + BUCKET_S)
    assert stats.agreement == 0.75
    assert stats.mean_abs_diff == 0.25
    assert stats.pair_rows == 12
    empty = version_stats_read(client, environment="dev", model=model, version=3, since=T0, now=T0)
    assert empty.agreement is None and empty.mean_abs_diff is None
