"""The issue's targets from a run's results record: each ratio with its target and whether it
was met (`targets`), and what each throughput target allows per answer in CPU (`cpu_needed`).
Pure arithmetic over the record; tests/unit/bench/test_targets.py holds it to small records."""

from typing import Any

from bench.models import HEAVY_SIGNATURES

# The throughput targets: the heavy model against raw, the small model against the best
# other peer (and, with 3.0, against naive Celery).
HEAVY_VS_RAW = 0.85
SMALL_VS_BEST_PEER = 1.2


def best(points: list[dict[str, float]], concurrency: int | None = None) -> dict[str, float]:
    if concurrency is not None:
        return next(p for p in points if p["concurrency"] == concurrency)
    return max(points, key=lambda p: p["rps"])


def raw_limit(r: dict[str, Any], key: str) -> float:
    """The best rows/s a heavy model did raw: in one process or in the workers' layout."""
    one_process = max(v["rows_per_s"] for v in r["raw"][key].values())
    layout = r.get("raw_layout", {}).get(key, {}).get("batches", {})
    limit: float = max([one_process, *(v["rows_per_s"] for v in layout.values())])
    return limit


def cpu_needed(r: dict[str, Any]) -> dict[str, dict[str, float]]:
    """What each throughput target allows per answer in machine-wide CPU (core-µs, all cores of
    the machine busy), beside what each system spent at 64 clients (`cpu_budget`).

    Heavy: raw uses the cores for TensorFlow alone; 0.85 of its rate leaves the serving path
    (HTTP, API, Redis, Celery, kernel, load generator) 1/0.85 - 1 = 18 % of raw's cost per image.
    Digits: 1.2 x the Redis-list peer's rate, whatever the split between processes. "Raw" and
    "allowed" count the machine's cores whole, as "spent" does (busy cores per answer)."""
    spent = r.get("cpu_budget", {})
    cores = r["machine"]["cores"]
    out: dict[str, dict[str, float]] = {}
    for key in HEAVY_SIGNATURES:
        if key in spent and key in r["raw"]:
            limit = raw_limit(r, key)
            out[key] = {
                "target": HEAVY_VS_RAW,
                "raw_us": round(cores / limit * 1e6, 1),
                "allowed_us": round(cores / (HEAVY_VS_RAW * limit) * 1e6, 1),
                "spent_us": spent[key]["core_us_per_answer"],
            }
    # The Redis-list loop is the peer whose processes the bench can count (Ray's are its own).
    if "digits" in spent and "redis_loop" in spent:
        peer = spent["redis_loop"]
        out["digits"] = {
            "target": SMALL_VS_BEST_PEER,
            "peer_us": peer["core_us_per_answer"],
            "allowed_us": round(cores / (SMALL_VS_BEST_PEER * peer["rps"]) * 1e6, 1),
            "spent_us": spent["digits"]["core_us_per_answer"],
        }
        if "noop" in spent:
            out["digits"]["noop_us"] = spent["noop"]["core_us_per_answer"]
    return out


def targets(r: dict[str, Any]) -> dict[str, Any]:
    ours64 = best(r["ours_digits"], 64)
    peers = {
        name: best(r[f"{name}_digits"], 64)
        for name in ("redis_loop", "ray")
        if isinstance(r.get(f"{name}_digits"), list)
    }
    best_peer_name = max(peers, key=lambda n: peers[n]["rps"]) if peers else None
    one = best(r["ours_digits"], 1)
    out: dict[str, Any] = {}
    for key in HEAVY_SIGNATURES:
        if f"ours_{key}" not in r:
            continue
        # The limit is the best the machine did raw: one process with TensorFlow's threads, or the
        # workers' layout (several processes, threads split among them), whichever is faster. The
        # single process alone is reported too (the "raw in-process" figure).
        one_process = max(v["rows_per_s"] for v in r["raw"][key].values())
        limit = raw_limit(r, key)
        ours = best(r[f"ours_{key}"])["rps"]
        out[f"{key}_vs_raw"] = {"value": ours / limit, "target": HEAVY_VS_RAW}
        out[f"{key}_vs_one_process"] = {"value": ours / one_process, "target": None}
    out |= {
        "small_vs_naive_at_64": {"value": ours64["rps"] / best(r["naive_digits"], 64)["rps"], "target": 3.0},
        "small_vs_noop_at_64": {"value": ours64["rps"] / best(r["noop"], 64)["rps"], "target": None},
        "p50_one_client_minus_raw_ms": {
            "value": one["p50_ms"] - r["raw"]["digits"]["1"]["p50_ms"],
            "target": 5.0,
            "lower_is_better": True,
        },
        "inflight_2000_errors": {"value": r["inflight_2000"]["errors"], "target": 0, "lower_is_better": True},
    }
    if best_peer_name:
        out["small_vs_best_peer_at_64"] = {
            "value": ours64["rps"] / peers[best_peer_name]["rps"],
            "target": SMALL_VS_BEST_PEER,
            "peer": best_peer_name,
        }
        out["p99_vs_best_peer_at_64_ms"] = {
            "value": ours64["p99_ms"] - peers[best_peer_name]["p99_ms"],
            "target": 0.0,
            "lower_is_better": True,
            "peer": best_peer_name,
        }
    for item in out.values():
        if item["target"] is None:
            item["met"] = None
        elif item.get("lower_is_better"):
            item["met"] = item["value"] <= item["target"]
        else:
            item["met"] = item["value"] >= item["target"]
    return out
