"""Paired probe of two checkouts: the digits point at 64 clients, alternating before/after.

    python -m bench.paired --before /tmp/old-checkout --after . [--rounds 3] [--seconds 10]

Each round starts the platform of each checkout in turn (`python -m
inference_project.local_platform` in that folder, settings as `make bench` uses them), waits for
/readyz, runs `wrk` with 64 closed-loop clients on the native route for `--seconds`, and stops
it. Alternating cancels most of the machine's drift; compare the two columns, not absolutes.
Beside throughput and p99 it prints the CPU each answer cost the API process and the whole
platform (every process in pids.json and their children, in core-µs): on this shared 2-core
machine throughput moves ±10 % between identical runs, CPU per answer much less.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from bench.harness import TOKEN, cpu_during, free_port, wait_until
from bench.loadgen import LoadResult, wrk
from bench.systems.ours import platform_env


def platform_processes(var: Path) -> dict[str, int]:
    """The platform's processes by name (pids.json), with their children (the worker children)."""
    named: dict[str, int] = json.loads((var / "run" / "pids.json").read_text())
    for name, pid in list(named.items()):
        for index, child in enumerate(psutil.Process(pid).children(recursive=True)):
            named[f"{name}/child{index}"] = child.pid
    return named


def probe(checkout: Path, digits_dir: Path, seconds: float) -> tuple[LoadResult, float, float]:
    """The 64-client point, and the core-µs per answer of the API and of the whole platform."""
    with tempfile.TemporaryDirectory(prefix="paired-") as folder:
        root = Path(folder)
        env = platform_env(root, digits_dir, redis_port=free_port(), api_port=free_port())
        env["WORKER_METRICS_PORT"] = str(free_port())
        with (root / "platform.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "inference_project.local_platform"],
                cwd=checkout,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{env['API_PORT']}"
        try:
            wait_until(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 300, str(checkout))
            row = np.loadtxt(digits_dir / "validation.csv", delimiter=",", skiprows=1, max_rows=1)[:-1]
            body = json.dumps({"model": "digits", "inputs": [row.tolist()]}).encode()
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            url = f"{base}/api/v1/predictions"
            wrk(url, body, concurrency=64, seconds=2, headers=headers)  # warm-up
            result, cores = cpu_during(
                lambda: wrk(url, body, concurrency=64, seconds=seconds, headers=headers),
                platform_processes(root / "var"),
            )
            platform = sum(v for k, v in cores.items() if not k.startswith(("wrk", "idle")))
            return result, cores["api"] * 1e6 / result.rps, platform * 1e6 / result.rps
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            shutil.rmtree(root / "var", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--digits", type=Path, default=Path(".cache/demo-digits"))
    args = parser.parse_args()
    results: dict[str, list[tuple[LoadResult, float, float]]] = {"before": [], "after": []}
    for round_ in range(1, args.rounds + 1):
        # Alternate which goes first, so neither always runs on a machine the other warmed.
        order = ("before", "after") if round_ % 2 else ("after", "before")
        for name in order:
            result, api_us, platform_us = probe(
                getattr(args, name).resolve(), args.digits.resolve(), args.seconds
            )
            results[name].append((result, api_us, platform_us))
            print(
                f"round {round_} {name:6}: {result.rps:7.0f} req/s  p50 {result.p50_ms:5.1f} ms"
                f"  p99 {result.p99_ms:6.1f} ms  errors {result.errors}"
                f"  API {api_us:4.0f} core-µs/answer  platform {platform_us:5.0f}",
                flush=True,
            )
            time.sleep(2)
    for name, runs in results.items():
        rps = [r.rps for r, _, _ in runs]
        p99 = [r.p99_ms for r, _, _ in runs]
        api = [a for _, a, _ in runs]
        platform = [p for _, _, p in runs]
        print(
            f"{name:6}: req/s {' / '.join(f'{v:.0f}' for v in rps)} (mean {np.mean(rps):.0f});"
            f" p99 ms {' / '.join(f'{v:.1f}' for v in p99)};"
            f" API core-µs/answer {' / '.join(f'{v:.0f}' for v in api)} (mean {np.mean(api):.0f});"
            f" platform {' / '.join(f'{v:.0f}' for v in platform)} (mean {np.mean(platform):.0f})"
        )


if __name__ == "__main__":
    main()
