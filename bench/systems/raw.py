"""The limit: in-process `predict_on_batch` throughput at batch sizes 1, 8, 32, 64, and the
single-input latency, with the same thread settings as a worker child.

    python -m bench.systems.raw <model.keras> <input shape as JSON, without batch> [seconds per size] [--wait]

TensorFlow's thread pools follow TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS as a worker
child's do (workers/placement.py). With --wait the process loads and warms up, prints "ready" and
waits for a line on stdin before measuring: `bench.run` starts one such process per worker child
and releases them together, to measure the workers' layout without the serving around it.
"""

import json
import sys
import time

import numpy as np

BATCHES = (1, 8, 32, 64)


def measure(model_path: str, shape: list[int], seconds: float, wait: bool = False) -> dict[str, object]:
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


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--wait"]
    seconds = float(args[2]) if len(args) > 2 else 3.0
    print(json.dumps(measure(args[0], json.loads(args[1]), seconds, wait="--wait" in sys.argv)))
