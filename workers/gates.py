"""Promotion gate, run in its own process: load a version and score its validation set.

    python -m workers.gates < job.json

Reads the job (verified local paths of the model, preprocessing and validation files, and the
signature) from stdin; prints one JSON object: {"rows", "metrics": {...}, "load_seconds"}, or
{"error": "..."} and exits 1.
Running apart from the API keeps TensorFlow out of it, and a model that crashes or hangs while
loading only takes this process down (the caller enforces a timeout).
"""

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from apps.models_registry.drift import reference_stats
from inference_common.safe_artifacts import LoadPolicy, table_read

BATCH = 256


def validation_read(path: Path, *, policy: LoadPolicy | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feature columns and the last column as labels, from a .csv (with header) or .xlsx:
    numbers only, within the policy's row and size limits (formulas refused)."""
    policy = policy or LoadPolicy()
    return table_read(path, max_rows=policy.table_max_rows, max_bytes=policy.table_max_bytes)


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == labels))


METRICS = {"accuracy": accuracy}


def evaluate(job: dict[str, Any]) -> dict[str, Any]:
    """`job`: {"model", "preprocessing"?, "validation", "signature", "framework"?, "policy"?}:
    verified local paths, the signature, the runtime to load them with (default keras) and the
    load policy (inference_common/safe_artifacts.py; default: the built-in allow lists)."""
    from workers.predictor import ModelFiles
    from workers.runtimes import predictor_for

    signature = job["signature"]
    policy = LoadPolicy.from_dict(job["policy"]) if job.get("policy") else LoadPolicy()
    files = ModelFiles(
        model=Path(job["model"]),
        preprocessing=Path(job["preprocessing"]) if job.get("preprocessing") else None,
        signature=signature,
        policy=policy,
    )
    features, labels = validation_read(Path(job["validation"]), policy=policy)  # refused before any load
    started = time.perf_counter()
    predictor = predictor_for(job.get("framework", "keras"), files)
    predictor.load()
    load_seconds = time.perf_counter() - started
    spec = signature["inputs"][0]
    output = signature["outputs"][0]["name"]
    shape = [-1, *spec["shape"][1:]]
    scores = np.concatenate(
        [
            predictor.predict({spec["name"]: features[i : i + BATCH].reshape(shape).astype(np.float32)})[
                output
            ]
            for i in range(0, len(features), BATCH)
        ]
    )
    predictor.unload()
    return {
        "rows": len(labels),
        "metrics": {name: fn(scores, labels) for name, fn in METRICS.items()},
        "load_seconds": round(load_seconds, 3),
        "reference": reference_stats(features.reshape(shape), scores),
    }


def main() -> None:
    try:
        result = evaluate(json.loads(sys.stdin.read()))
    except Exception as exc:  # report any load/predict failure to the caller as data
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    sys.exit(1 if "error" in result else 0)


if __name__ == "__main__":
    main()
