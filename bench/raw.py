"""The limit: in-process `predict_on_batch` throughput at batch sizes 1, 8, 32, 64, and the
single-input latency, with the same thread settings as a worker child (TensorFlow defaults).

    python -m bench.raw <model.keras> <input shape as JSON, without batch> [seconds per size]
"""

import json
import sys
import time

import numpy as np


def measure(model_path: str, shape: list[int], seconds: float) -> dict[str, object]:
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    results = {}
    for batch in (1, 8, 32, 64):
        x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
        for _ in range(3):
            model.predict_on_batch(x)
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
    print(
        json.dumps(
            measure(sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 3.0)
        )
    )
