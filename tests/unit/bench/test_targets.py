"""The benchmark's target ratios (bench/targets.py) and CPU per answer (bench/harness.py
`cpu_budget`), from a results record."""

from typing import Any

from bench.harness import cpu_budget
from bench.targets import cpu_needed, targets


def point(concurrency: int, rps: float, p50: float = 10.0, p99: float = 50.0) -> dict[str, float]:
    return {"concurrency": concurrency, "rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": 0}


def results(*, layout_best: float) -> dict[str, Any]:
    return {
        "raw": {
            "digits": {"1": {"rows_per_s": 2000.0, "p50_ms": 0.5}},
            "heavy": {
                "8": {"rows_per_s": 200.0, "p50_ms": 40.0},
                "32": {"rows_per_s": 210.0, "p50_ms": 150.0},
            },
        },
        "raw_layout": {
            "heavy": {
                "processes": 2,
                "threads": 1,
                "batches": {"8": {"rows_per_s": layout_best, "p50_ms": 50.0}},
            }
        },
        "ours_digits": [point(1, 250, p50=4.0), point(64, 3000, p99=60.0)],
        "ours_heavy": [point(1, 60), point(64, 168), point(256, 130)],
        "noop": [point(64, 15000)],
        "naive_digits": [point(64, 300)],
        "redis_loop_digits": [point(64, 6000, p99=25.0)],
        "ray_digits": [point(64, 450, p99=250.0)],
        "inflight_2000": {"errors": 0},
    }


def test_the_heavy_ratio_divides_by_the_best_raw_layout() -> None:
    assert targets(results(layout_best=280.0))["heavy_vs_raw"]["value"] == 168 / 280
    # When one process is faster than the workers' layout, that is the limit.
    assert targets(results(layout_best=150.0))["heavy_vs_raw"]["value"] == 168 / 210


def test_the_single_process_ratio_is_reported_without_a_target() -> None:
    item = targets(results(layout_best=280.0))["heavy_vs_one_process"]
    assert item["value"] == 168 / 210 and item["target"] is None and item["met"] is None


def test_each_heavy_signature_divides_by_its_own_raw_limit() -> None:
    record = results(layout_best=280.0)
    record["raw"]["heavy_uint8"] = {"8": {"rows_per_s": 230.0, "p50_ms": 35.0}}
    record["raw_layout"]["heavy_uint8"] = {
        "processes": 2,
        "threads": 1,
        "batches": {"8": {"rows_per_s": 300.0, "p50_ms": 45.0}},
    }
    record["ours_heavy_uint8"] = [point(64, 255), point(256, 240)]
    out = targets(record)
    assert out["heavy_uint8_vs_raw"]["value"] == 255 / 300 and out["heavy_uint8_vs_raw"]["met"]
    assert out["heavy_uint8_vs_one_process"]["value"] == 255 / 230
    assert out["heavy_vs_raw"]["value"] == 168 / 280 and out["heavy_vs_raw"]["met"] is False


def test_a_heavy_signature_not_measured_is_left_out() -> None:
    assert "heavy_uint8_vs_raw" not in targets(results(layout_best=280.0))


def test_small_model_ratios_and_flags() -> None:
    out = targets(results(layout_best=280.0))
    assert out["small_vs_naive_at_64"]["value"] == 10.0 and out["small_vs_naive_at_64"]["met"]
    best = out["small_vs_best_peer_at_64"]
    assert best["peer"] == "redis_loop" and best["value"] == 0.5 and best["met"] is False
    assert (
        out["p99_vs_best_peer_at_64_ms"]["value"] == 35.0 and out["p99_vs_best_peer_at_64_ms"]["met"] is False
    )
    assert out["p50_one_client_minus_raw_ms"]["value"] == 3.5 and out["p50_one_client_minus_raw_ms"]["met"]
    assert out["small_vs_noop_at_64"]["met"] is None
    assert out["inflight_2000_errors"]["met"]


def test_a_skipped_peer_is_left_out() -> None:
    record = results(layout_best=280.0)
    record["ray_digits"] = {"skipped": "not in quick mode"}
    record["redis_loop_digits"] = [point(64, 400, p99=90.0)]
    out = targets(record)
    assert out["small_vs_best_peer_at_64"]["peer"] == "redis_loop"
    assert out["p99_vs_best_peer_at_64_ms"]["met"] is True  # 60 ms against 90 ms


def test_the_cpu_budget_counts_every_busy_core_per_answer() -> None:
    cores = {"api": 0.7, "worker-digits/child0": 0.4, "idle (whole machine)": 0.5}
    budget = cpu_budget(3000.0, cores, 2)
    # 1.5 busy cores (not the 1.1 the named processes add up to: the kernel and the rest count)
    assert budget["busy_cores"] == 1.5
    assert budget["core_us_per_answer"] == 500.0
    assert budget["ceiling_rps"] == 4000.0


def test_an_idle_machine_has_no_ceiling() -> None:
    assert cpu_budget(0.0, {"idle (whole machine)": 2.0}, 2) == {
        "rps": 0.0,
        "busy_cores": 0.0,
        "core_us_per_answer": 0.0,
        "ceiling_rps": 0.0,
    }


def test_cpu_needed_sets_each_target_against_what_was_spent() -> None:
    record = results(layout_best=280.0)
    record["machine"] = {"cores": 2}
    record["cpu_budget"] = {
        "digits": {"rps": 3000.0, "core_us_per_answer": 500.0},
        "noop": {"rps": 15000.0, "core_us_per_answer": 120.0},
        "heavy": {"rps": 168.0, "core_us_per_answer": 11000.0},
        "redis_loop": {"rps": 6000.0, "core_us_per_answer": 300.0},
    }
    need = cpu_needed(record)
    # Raw: 280 images/s on 2 cores; 0.85 of it leaves 1/0.85 of raw's cost per image.
    assert need["heavy"]["raw_us"] == round(2 / 280 * 1e6, 1)
    assert need["heavy"]["allowed_us"] == round(2 / (0.85 * 280) * 1e6, 1)
    assert need["heavy"]["spent_us"] == 11000.0
    # 1.2 x 6,000 req/s on 2 cores: 277.8 core-µs per answer at most.
    assert need["digits"] == {
        "target": 1.2,
        "peer_us": 300.0,
        "allowed_us": 277.8,
        "spent_us": 500.0,
        "noop_us": 120.0,
    }
