"""The benchmark's models: the digits CNN (trained by the platform) and a compute-heavy
MobileNetV2 with weights=None (random weights: nothing to download; the compute is the same)."""

import json
import sys
from pathlib import Path


def heavy_model_build(out: Path, *, size: int, alpha: float) -> Path:
    """Write model.keras + model_card.json for MobileNetV2 at size x size x 3 into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "model.keras").exists():
        import keras

        model = keras.applications.MobileNetV2(
            input_shape=(size, size, 3), alpha=alpha, weights=None, classes=1000
        )
        model.save(out / "model.keras")
    card = {
        "name": "mobilenet",
        "description": f"MobileNetV2 alpha={alpha} at {size}x{size}, weights=None (benchmark load)",
        "signature": {
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, size, size, 3]}],
            "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 1000]}],
        },
        "metrics": {},
        # An operator's tuning for a compute-bound model: with one thread per worker child, batches
        # past 8-16 images no longer run faster per image (docs/benchmarks.md), and a longer window
        # fills them (the digits model keeps the defaults, 64 and 2 ms).
        "batching": {"max_batch_size": 16, "max_delay_ms": 10},
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2))
    return out


if __name__ == "__main__":
    heavy_model_build(Path(sys.argv[1]), size=int(sys.argv[2]), alpha=float(sys.argv[3]))
