"""The runtimes a version can be served with, by the `framework` of its model card.

Adding a model format is one `Predictor` (workers/predictor.py), one line here and its name in
inference_common/frameworks.py (what the registry accepts).
"""

from workers.predictor import KerasPredictor, ModelFiles, Predictor
from workers.simulated import SimulatedAccelerator

PREDICTORS: dict[str, type[Predictor]] = {"keras": KerasPredictor, "simulated": SimulatedAccelerator}


def predictor_for(framework: str, files: ModelFiles) -> Predictor:
    """An unloaded predictor for a version of `framework`; ValueError for an unknown one."""
    runtime = PREDICTORS.get(framework)
    if runtime is None:
        raise ValueError(f"no runtime for framework {framework!r} (known: {sorted(PREDICTORS)})")
    return runtime(files)
