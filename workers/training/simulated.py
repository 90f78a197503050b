"""Write a simulated-accelerator version (workers/simulated.py): its model file and model card.

Nothing is trained: the "model" is the kernel's timing. The signature defaults to
MobileNetV2's input (224x224x3 FP32) and 10 scores out.

  model.simulated   {"batch_ms", "row_ms"}: each batch takes batch_ms + row_ms x rows, asleep
  model_card.json   name, signature, "framework": "simulated", batching

Usage: python -m workers.training.simulated --out DIR [--name accel] [--batch-ms 20]
       [--row-ms 0.05] [--input-shape 224,224,3] [--datatype FP32] [--outputs 10]
"""

import argparse
import json
from pathlib import Path
from typing import Any

from workers.simulated import DEFAULT_BATCH_MS, DEFAULT_ROW_MS


def simulated_write(
    *,
    out: Path,
    name: str = "accel",
    batch_ms: float = DEFAULT_BATCH_MS,
    row_ms: float = DEFAULT_ROW_MS,
    input_shape: tuple[int, ...] = (224, 224, 3),
    datatype: str = "FP32",
    outputs: int = 10,
    max_batch_size: int = 64,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.simulated").write_text(json.dumps({"batch_ms": batch_ms, "row_ms": row_ms}))
    card: dict[str, Any] = {
        "name": name,
        "description": f"Simulated accelerator: {batch_ms} ms + {row_ms} ms per row a batch, no CPU.",
        "framework": "simulated",
        "signature": {
            "inputs": [{"name": "input", "datatype": datatype, "shape": [-1, *input_shape]}],
            "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, outputs]}],
        },
        "batching": {"max_batch_size": max_batch_size, "max_delay_ms": 2.0},
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="accel")
    parser.add_argument("--batch-ms", type=float, default=DEFAULT_BATCH_MS)
    parser.add_argument("--row-ms", type=float, default=DEFAULT_ROW_MS)
    parser.add_argument("--input-shape", default="224,224,3")
    parser.add_argument("--datatype", default="FP32")
    parser.add_argument("--outputs", type=int, default=10)
    args = parser.parse_args()
    shape = tuple(int(d) for d in args.input_shape.split(","))
    simulated_write(
        out=args.out,
        name=args.name,
        batch_ms=args.batch_ms,
        row_ms=args.row_ms,
        input_shape=shape,
        datatype=args.datatype,
        outputs=args.outputs,
    )
    print(f"simulated accelerator {args.name!r} -> {args.out}")


if __name__ == "__main__":
    main()
