"""Raw: in-process `predict_on_batch`, the limit every served figure is held against.

Run as a program, it measures one model: throughput at batch sizes 1, 8, 32, 64, and the
single-input latency, with the same thread settings as a worker child.

    python -m bench.systems.raw <model.keras> <input shape as JSON, without batch> [seconds per size] [--wait]

TensorFlow's thread pools follow TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS as a worker
child's do (workers/placement.py). With --wait the process loads and warms up, prints "ready" and
waits for a line on stdin before measuring.

Imported, it runs those programs for a benchmark run (`raw_measure`): each model in one process
with TensorFlow's threads, and each heavy model in the heavy worker's layout, one process per
worker child, released together, to measure that layout without the serving around it.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import HEAVY_CHILDREN, PYTHON, ROOT, Bench, log
from workers.placement import cpu_cores

BATCHES = (1, 8, 32, 64)


def in_process_measure(
    model_path: str, shape: list[int], seconds: float, wait: bool = False
) -> dict[str, dict[str, float]]:
    """The program's work, in this process: rows/s and p50 per call at each of BATCHES."""
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    dtype = np.dtype(model.inputs[0].dtype)  # float32, or uint8 for a model that takes pixels
    scale = 255 if dtype.kind in "ui" else 1
    inputs = {
        batch: (np.random.default_rng(0).random((batch, *shape)) * scale).astype(dtype) for batch in BATCHES
    }
    for x in inputs.values():
        for _ in range(3):
            model.predict_on_batch(x)
    if wait:
        print("ready", flush=True)
        sys.stdin.readline()
    results = {}
    for batch, x in inputs.items():
        calls, started = 0, time.perf_counter()
        latencies = []
        while time.perf_counter() - started < seconds or calls < 3:
            t = time.perf_counter()
            model.predict_on_batch(x)
            latencies.append(time.perf_counter() - t)
            calls += 1
        elapsed = time.perf_counter() - started
        results[str(batch)] = {
            "rows_per_s": calls * batch / elapsed,
            "p50_ms": float(np.median(latencies) * 1000),
        }
    return results


def raw_one_process(model_path: Path, shape: list[int], seconds: float) -> dict[str, Any]:
    done = subprocess.run(
        [PYTHON, "-m", "bench.systems.raw", str(model_path), json.dumps(shape), str(seconds)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return measured


def raw_layout(model_path: Path, shape: list[int], seconds: float, processes: int) -> dict[str, Any]:
    """The workers' layout without the serving around it: `processes` processes measure at the
    same time, each with its share of the cores as a worker child gets (workers/placement.py);
    rows/s are summed, p50 is the slowest process's."""
    threads = max(1, cpu_cores() // processes)
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads)}
    cmd = [PYTHON, "-m", "bench.systems.raw", str(model_path), json.dumps(shape), str(seconds), "--wait"]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    for proc in procs:  # all loaded and warmed up, then all released together
        if proc.stdout is None or proc.stdout.readline().strip() != "ready":
            raise RuntimeError("bench.systems.raw did not start")
    for proc in procs:
        if proc.stdin is not None:
            proc.stdin.write("go\n")
            proc.stdin.flush()
    each = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    batches = {
        batch: {
            "rows_per_s": sum(r[batch]["rows_per_s"] for r in each),
            "p50_ms": max(r[batch]["p50_ms"] for r in each),
        }
        for batch in each[0]
    }
    return {"processes": processes, "threads": threads, "batches": batches}


def raw_measure(bench: Bench) -> None:
    """results["raw"]: every model in one process; results["raw_layout"]: each heavy model in the
    heavy worker's layout (HEAVY_CHILDREN processes at once)."""
    raw_seconds = 0.5 if bench.quick else 5.0
    log("raw in-process predict_on_batch")
    heavy_shape = [bench.heavy_size, bench.heavy_size, 3]
    bench.results["raw"] = {"digits": raw_one_process(bench.digits_dir / "model.keras", [64], raw_seconds)}
    bench.results["raw_layout"] = {}
    for key, path in bench.heavy_dirs.items():
        bench.results["raw"][key] = raw_one_process(path / "model.keras", heavy_shape, raw_seconds)
        log(f"raw {key}, the heavy worker's layout: {HEAVY_CHILDREN} processes at once")
        bench.results["raw_layout"][key] = raw_layout(
            path / "model.keras", heavy_shape, raw_seconds, HEAVY_CHILDREN
        )


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--wait"]
    seconds = float(args[2]) if len(args) > 2 else 3.0
    print(json.dumps(in_process_measure(args[0], json.loads(args[1]), seconds, wait="--wait" in sys.argv)))
