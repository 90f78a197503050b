"""The benchmark's models: the digits CNN (trained by the platform) and a compute-heavy
MobileNetV2 with weights=None (random weights: nothing to download; the compute is the same).

The heavy model comes in two signatures: FP32 images (602 KB per 224x224 image on the wire) and
UINT8 pixels (150 KB), the way image models are often deployed, with the scaling to [-1, 1] as
the model's first layer. Same network, same compute; the wire, Redis and the kernel move a
quarter of the bytes.

    python -m bench.models <out dir> <size> <alpha> [FP32|UINT8]

`models_prepare` gives a run its models: the digits model cached by `make run` (or trained), and
both heavy signatures built by this program in a process of its own (Keras stays out of the
benchmark's process).
"""

import json
import subprocess
import sys
from pathlib import Path

from bench.harness import PYTHON, ROOT, Bench
from workers.training.simulated import simulated_write

HEAVY_NAMES = {"FP32": "mobilenet", "UINT8": "mobilenet-uint8"}
# The benchmark's result keys of the two signatures (bench/systems/, bench/report.py).
HEAVY_SIGNATURES = {"heavy": "FP32", "heavy_uint8": "UINT8"}
# The simulated accelerator's signatures (result key -> input datatype) and model names; a batch
# takes ACCEL_BATCH_MS of sleep whatever its size (a GPU answering a batch of images).
ACCEL_SIGNATURES = {"accel_fp32": "FP32", "accel_uint8": "UINT8"}
ACCEL_NAMES = {"FP32": "accel-fp32", "UINT8": "accel-uint8"}
ACCEL_BATCH_MS = 1.0


def heavy_model_build(out: Path, *, size: int, alpha: float, datatype: str = "FP32") -> Path:
    """Write model.keras + model_card.json for MobileNetV2 at size x size x 3 into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "model.keras").exists():
        import keras

        network = keras.applications.MobileNetV2(
            input_shape=(size, size, 3), alpha=alpha, weights=None, classes=1000
        )
        if datatype == "UINT8":
            pixels = keras.Input((size, size, 3), dtype="uint8", name="images")
            scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(pixels)
            network = keras.Model(pixels, network(scaled))
        network.save(out / "model.keras")
    card = {
        "name": HEAVY_NAMES[datatype],
        "description": f"MobileNetV2 alpha={alpha} at {size}x{size}, {datatype} input, weights=None (benchmark load)",
        "signature": {
            "inputs": [{"name": "images", "datatype": datatype, "shape": [-1, size, size, 3]}],
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


def models_prepare(bench: Bench) -> None:
    """Set `bench.digits_dir`, `bench.heavy_dirs` and `bench.accel_dirs` (result key -> folder),
    building what is missing, and record the heavy model's batching settings
    (results["heavy_batching"])."""
    digits_prepare(bench)
    bench.heavy_dirs = {
        key: bench.work / f"mobilenet-{bench.heavy_size}-{bench.heavy_alpha}-{datatype.lower()}"
        for key, datatype in HEAVY_SIGNATURES.items()
    }
    for key, datatype in HEAVY_SIGNATURES.items():
        subprocess.run(
            [
                *(PYTHON, "-m", "bench.models", str(bench.heavy_dirs[key])),
                *(str(bench.heavy_size), str(bench.heavy_alpha), datatype),
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    card = json.loads((bench.heavy_dirs["heavy"] / "model_card.json").read_text())
    bench.results["heavy_batching"] = card["batching"]
    # The simulated accelerator (workers/simulated.py) with the heavy model's input: a model that
    # costs no CPU, so what is measured is the serving path a GPU tier would need.
    bench.accel_dirs = {}
    for key in ACCEL_SIGNATURES:
        accel_prepare(bench, key)


def digits_prepare(bench: Bench) -> None:
    """Set `bench.digits_dir`: the demo model `make run` trained, else one trained here."""
    bench.digits_dir = digits_trained(bench)


def digits_trained(bench: Bench, seed: int | None = None) -> Path:
    """The digits model trained with `seed` (None: the demo model's): the one in .cache/ (`make
    run` trains the demo model there, tests/integration/test_rollouts.py the seed-1 one), else
    one trained into the bench's work folder."""
    name = "demo-digits" if seed is None else f"demo-digits-seed{seed}"
    cached = ROOT / ".cache" / name
    folder = cached if (cached / "model_card.json").exists() else bench.work / name
    if not (folder / "model_card.json").exists():
        seeded = [] if seed is None else ["--seed", str(seed)]
        subprocess.run(
            [PYTHON, "-m", "workers.training.digits", "--out", str(folder), *seeded],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return folder


def accel_prepare(bench: Bench, key: str) -> None:
    """Write the simulated accelerator of signature `key` (ACCEL_SIGNATURES) into
    `bench.accel_dirs[key]`."""
    datatype = ACCEL_SIGNATURES[key]
    folder = bench.accel_dirs[key] = bench.work / f"{key}-{bench.heavy_size}"
    simulated_write(
        out=folder,
        name=ACCEL_NAMES[datatype],
        batch_ms=ACCEL_BATCH_MS,
        row_ms=0.0,
        input_shape=(bench.heavy_size, bench.heavy_size, 3),
        datatype=datatype,
    )


if __name__ == "__main__":
    heavy_model_build(
        Path(sys.argv[1]),
        size=int(sys.argv[2]),
        alpha=float(sys.argv[3]),
        datatype=sys.argv[4] if len(sys.argv) > 4 else "FP32",
    )
