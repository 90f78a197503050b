"""The inference interface every model runtime implements, and its Keras implementation (the
runtime a version's `framework` picks: workers/runtimes.py).

Plain Python: no Celery here, so it is tested directly and reused by the benchmarks.
"""

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference_common.safe_artifacts import ArtifactRefused, LoadPolicy, keras_check, pickle_load


@dataclass(frozen=True)
class ModelFiles:
    """Local, checksum-verified files of one model version, and what loading them may accept."""

    model: Path
    preprocessing: Path | None = None
    signature: dict[str, Any] = field(default_factory=dict)
    policy: LoadPolicy = field(default_factory=LoadPolicy)


class Predictor(abc.ABC):
    """One loaded model version.

    Lifecycle: `load()` once (in the worker child, after the fork), then any number of
    `predict()` calls from one thread, then `unload()` to release memory. Implementations must
    accept a batch along the first axis and return one row per input row for every output.
    """

    def __init__(self, files: ModelFiles) -> None:
        self.files = files

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights and warm up, so the first real request pays no compile cost."""

    @abc.abstractmethod
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. `inputs` and the result map signature tensor names to arrays."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Drop the model; the predictor cannot be used afterwards."""


class KerasPredictor(Predictor):
    """A Keras 3 model (`.keras` or `.h5`), with an optional preprocessing pickle.

    The pickle is a dict that may hold `scaler` (anything with `.transform`) applied to the
    single input before the model. Nothing either file carries runs: the pickle's globals must be
    on the allow list, the model may hold no Lambda layer (unless a superuser trusted this
    version) and Keras' safe mode stays on (inference_common/safe_artifacts.py).
    """

    def __init__(self, files: ModelFiles) -> None:
        super().__init__(files)
        self._model: Any = None
        self._scaler: Any = None

    def load(self) -> None:
        import keras  # imported here so that only worker children ever load TensorFlow

        policy = self.files.policy
        companion: Any = {}
        if self.files.preprocessing is not None:
            companion = pickle_load(self.files.preprocessing, allowed=policy.pickle_allowed)
            if not isinstance(companion, dict):
                raise ArtifactRefused(
                    self.files.preprocessing.name, "it must hold a dict, e.g. {'scaler': ...}"
                )
        if not policy.unsafe_trusted:
            keras_check(self.files.model, allowed_objects=policy.keras_allowed)
        self._model = keras.saving.load_model(
            self.files.model, compile=False, safe_mode=not policy.unsafe_trusted
        )
        self._scaler = companion.get("scaler")
        self._warm_up()

    def _warm_up(self) -> None:
        """Trace the predict function for a single row and for a batch before serving."""
        spec = self.files.signature["inputs"][0]
        for rows in (1, 8):
            shape = [rows, *spec["shape"][1:]]
            if spec["datatype"] == "BYTES":
                x = np.full(shape, b"", dtype=object)
            else:
                x = np.zeros(shape, dtype=np.float32)
            self.predict({spec["name"]: x})

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Local references: a concurrent unload() (hot swap) lets an in-flight batch finish.
        model, scaler = self._model, self._scaler
        if model is None:
            raise RuntimeError("predictor is not loaded")
        input_spec = self.files.signature["inputs"][0]
        output_specs = self.files.signature["outputs"]
        x = inputs[input_spec["name"]]
        if input_spec["datatype"] == "BYTES":
            import tensorflow as tf

            x = tf.constant(x)  # an object array of bytes: Keras takes it as a tf.string tensor
        else:
            x = x.astype(np.float32, copy=False)
            if scaler is not None:
                x = scaler.transform(x.reshape(len(x), -1)).reshape(x.shape).astype(np.float32)
        # predict_on_batch runs the compiled (traced once, reduce_retracing) predict function:
        # 0.44 ms per single-row call for the demo CNN against 3.1 ms for eager model(x), and none
        # of model.predict()'s per-call dataset/callback set-up or its memory growth.
        result = model.predict_on_batch(x)
        outputs = result if isinstance(result, (list, tuple)) else [result]
        return {spec["name"]: np.asarray(out) for spec, out in zip(output_specs, outputs, strict=True)}

    def unload(self) -> None:
        self._model = None
        self._scaler = None
