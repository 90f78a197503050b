"""A simulated accelerator: a `Predictor` that computes like a GPU kernel and holds no CPU.

Registered like any model version (model card `"framework": "simulated"`, a `model.simulated`
file as its model), it answers each batch after `batch_ms + row_ms x rows` of wall time spent
asleep (the GIL released, no core busy: what a worker waiting on a GPU does), so the serving
path around it is what a measurement sees, not these two cores' speed at TensorFlow.

Its answer is deterministic, for tests to check: every output tensor of row i holds
`first + k` at its k-th element (flattened), where `first` is row i's first input value (for a
BYTES input, the first element's length). Reading one value per row keeps it O(rows), whatever
the input's size.

The model file is JSON: `{"batch_ms": 20, "row_ms": 0.05}` (those are the defaults).
`python -m workers.training.simulated --out DIR` writes one with its model card.
"""

import json
import math
import time

import numpy as np

from inference_common.wire import V2_TO_NUMPY
from workers.predictor import ModelFiles, Predictor

DEFAULT_BATCH_MS = 20.0
DEFAULT_ROW_MS = 0.05


class SimulatedAccelerator(Predictor):
    def __init__(self, files: ModelFiles) -> None:
        super().__init__(files)
        self._kernel_s: tuple[float, float] | None = None

    def load(self) -> None:
        params = json.loads(self.files.model.read_text())
        batch_ms = float(params.get("batch_ms", DEFAULT_BATCH_MS))
        row_ms = float(params.get("row_ms", DEFAULT_ROW_MS))
        if not (0 <= batch_ms < 60_000 and 0 <= row_ms < 1_000):
            raise ValueError(f"batch_ms {batch_ms} / row_ms {row_ms} out of range")
        self._kernel_s = (batch_ms / 1000, row_ms / 1000)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        kernel = self._kernel_s
        if kernel is None:
            raise RuntimeError("predictor is not loaded")
        signature = self.files.signature
        x = inputs[signature["inputs"][0]["name"]]
        rows = len(x)
        time.sleep(kernel[0] + kernel[1] * rows)
        flat = x.reshape(rows, -1)[:, 0]
        first = np.array([len(v) for v in flat], dtype=np.float64) if x.dtype == object else flat
        outputs = {}
        for spec in signature["outputs"]:
            shape = spec["shape"][1:]
            values = first.astype(np.float64)[:, None] + np.arange(math.prod(shape))
            outputs[spec["name"]] = values.astype(V2_TO_NUMPY[spec["datatype"]]).reshape(rows, *shape)
        return outputs

    def unload(self) -> None:
        self._kernel_s = None
