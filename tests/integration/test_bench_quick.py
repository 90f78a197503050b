"""`make bench QUICK=1` inside `make test`: the harness runs end to end and produces its figures.
It checks the harness, not the targets (those are for the full run on a quiet machine)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_quick_benchmark_produces_its_figures(tmp_path: Path, demo_model_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    for key in (
        "raw",
        "ours_digits",
        "ours_heavy",
        "ours_heavy_uint8",
        "ours_digits_grpc",
        "ours_heavy_grpc",
        "noop",
        "naive_digits",
        "redis_loop_digits",
        "inflight_2000",
        "targets",
    ):
        assert key in results, key
    accel = ("accel_fp32", "accel_fp32_grpc", "accel_uint8", "accel_uint8_grpc")
    events = ("digits_events_on", "digits_events_off")
    series = ("digits", "heavy", "heavy_uint8", "digits_grpc", "heavy_grpc", *events, *accel)
    served = [point for key in series for point in results[f"ours_{key}"]]
    served += results["redis_loop_accel_fp32"] + results["redis_loop_accel_uint8"]
    assert all(point["errors"] == 0 and point["rps"] > 0 for point in served)
    assert results["inflight_2000"]["errors"] == 0
    # Each heavy signature ran on its own worker with one child per core, measured raw in the same
    # layout, and has its ratio to that limit.
    for key, worker in (("heavy", "worker-mobilenet/"), ("heavy_uint8", "worker-mobilenet-uint8/")):
        layout = results["raw_layout"][key]
        assert layout["processes"] >= 1 and all(v["rows_per_s"] > 0 for v in layout["batches"].values())
        assert len([k for k in results["memory_after_load"] if k.startswith(worker)]) == layout["processes"]
        assert results["targets"][f"{key}_vs_raw"]["value"] > 0
    # The CPU table covers both signatures and the digits model, over REST and gRPC.
    assert set(results["cpu_at_64"]) == {
        "digits",
        "noop",
        "heavy",
        "heavy_uint8",
        "redis_loop",
        "digits_grpc",
        "heavy_grpc",
        "digits_events_on",
        "digits_events_off",
        *accel,
        "redis_loop_accel_fp32",
        "redis_loop_accel_uint8",
    }
    # The simulated accelerator: every process's CPU per image at 1, 8 and 64 clients, ours and
    # the loop's, and the serving path's figure per image.
    for key in (*accel, "redis_loop_accel_fp32", "redis_loop_accel_uint8"):
        levels = results["cpu_by_level"][key]
        assert set(levels) == {"1", "8", "64"}
        assert all(level["core_us_per_answer_by_process"] for level in levels.values())
    report = (tmp_path / "benchmarks.md").read_text()
    assert "## The serving path per image" in report and "## Celery task events on and off" in report
    # ... and each system's CPU per answer, the Redis-list peer's processes included.
    assert {"redis-loop web", "redis-loop model", "redis-loop redis"} <= set(
        results["cpu_at_64"]["redis_loop"]
    )
    for budget in results["cpu_budget"].values():
        assert budget["core_us_per_answer"] > 0 and budget["ceiling_rps"] >= budget["rps"]
    # What each throughput target allows per answer, beside what was spent.
    assert set(results["cpu_needed"]) == {"digits", "heavy", "heavy_uint8"}
    assert all(need["allowed_us"] > 0 and need["spent_us"] > 0 for need in results["cpu_needed"].values())
    assert (tmp_path / "benchmarks.png").stat().st_size > 10_000
    report = (tmp_path / "benchmarks.md").read_text()
    assert "## Targets" in report and "## CPU per answer at 64 clients" in report
