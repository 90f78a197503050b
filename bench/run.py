"""`make bench`: our platform against the limit (raw in-process predict) and the peers, on one
machine, in one run. Writes bench/results/latest.json, docs/benchmarks.md and docs/benchmarks.png.

    python -m bench.run            # full: 10 s per point, c = 1, 8, 64, 256, MobileNetV2 224x224,
                                   #       Ray Serve, a 10-minute memory run
    python -m bench.run --quick    # < 3 minutes, checks the harness (what `make test` runs)

The run order is here; what each system measured does is in bench/systems/, what they share in
bench/harness.py, the target maths in bench/targets.py, the report in bench/report.py.
"""

import argparse
import json
import os
import resource
import shutil
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Bench, machine
from bench.memory import memory_run
from bench.models import models_prepare
from bench.systems.naive_celery import naive_celery_measure
from bench.systems.ours import events_measure, ours_measure, platform_start, platform_stop
from bench.systems.raw import raw_measure
from bench.systems.ray_serve import ray_serve_measure
from bench.systems.redis_loop import redis_loop_measure
from bench.targets import cpu_needed, targets


def bench_run(*, quick: bool, out: Path) -> dict[str, Any]:
    """Every system in turn, one at a time on the machine; the results record."""
    bench = Bench(quick, out)
    bench.results["machine"] = machine()
    bench.results["command"] = "make bench QUICK=1" if quick else "make bench"
    models_prepare(bench)
    raw_measure(bench)
    try:
        platform = platform_start(bench)
        ours_measure(bench, platform)
        naive_celery_measure(bench, platform)  # on the platform's Redis and workers
        if not quick:
            memory_run(bench, platform, float(os.environ.get("BENCH_MEMORY_S", "600")))
        platform_stop(bench, platform)
        events_measure(bench)
        redis_loop_measure(bench)
        if quick:
            bench.results["ray_digits"] = {"skipped": "not in quick mode"}
        else:
            ray_serve_measure(bench)
    finally:
        bench.procs.stop_all()
    bench.results["targets"] = targets(bench.results)
    bench.results["cpu_needed"] = cpu_needed(bench.results)
    return bench.results


# Sections of docs/benchmarks.md measured by other commands (each names its own) follow this line;
# a `make bench` rewrite keeps them.
KEPT_MARKER = (
    "<!-- Measured by other commands (each names its own): kept when make bench rewrites this file. -->"
)


def _kept_sections(docs: Path) -> str:
    text = docs.read_text() if docs.exists() else ""
    index = text.find(KEPT_MARKER)
    return "" if index < 0 else "\n" + text[index:]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--docs", action="store_true", help="also write docs/benchmarks.md and docs/benchmarks.png"
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # 2,000 connections
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results = bench_run(quick=args.quick, out=args.output_dir)
    (args.output_dir / "latest.json").write_text(json.dumps(results, indent=2))
    from bench.report import markdown, plot, serving_path_us

    plot(results, args.output_dir / "benchmarks.png")
    report = markdown(results)
    (args.output_dir / "benchmarks.md").write_text(report)
    if args.docs:
        shutil.copyfile(args.output_dir / "benchmarks.png", ROOT / "docs" / "benchmarks.png")
        docs = ROOT / "docs" / "benchmarks.md"
        docs.write_text(report + _kept_sections(docs))
        # The same run machine-readably, with the serving path's figure per image.
        machine_readable = {**results, "serving_path_core_us_per_image": serving_path_us(results)}
        (ROOT / "docs" / "benchmarks.json").write_text(json.dumps(machine_readable, indent=2) + "\n")
    print(report)


if __name__ == "__main__":
    main()
