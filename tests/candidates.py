"""Bad candidates of the demo digits model that pass every promotion gate, then misbehave live.

The rollout tests (#17) start rollouts of these and expect the platform's analysis to roll each
back by itself. Every candidate is a folder like the trained one (model.keras,
preprocessing.pickle, validation.csv, model_card.json) that passes the registry's gates: plain
Keras layers only (no Lambda, safe mode on), a pickle on the allow list, and an accuracy on its
own validation set at least the card's minimum. What each does on live traffic:

  wrong    the base's scores through a fixed permutation of the 10 classes: as confident and
           error-free as the base, and wrong on every row; its validation labels are permuted
           the same way (a training pipeline with a label bug), so its own gate passes
  slow     the base's answers, exactly, plus a zero-weighted wide branch that costs about ten
           times the base's time per batch
  failing  the base with its scaler baked in, and a guard branch that raises inside
           predict_on_batch for a pixel value of 16.5 or more (the digits' range is 0..16)

    python -m tests.candidates --kind wrong|slow|failing --base DIR --out DIR [--timing]

`--timing` also prints the median time of KerasPredictor.predict for the base and the candidate
(batch 1 and 8). TensorFlow is imported inside the functions only.
"""

import argparse
import json
import pickle
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("wrong", "slow", "failing")
# Where each wrong answer goes: class i's score is reported as class WRONG_PERMUTATION[i]. A
# derangement, so no class keeps its own answer.
WRONG_PERMUTATION = (3, 7, 0, 9, 5, 2, 8, 1, 4, 6)
# The slow branch: Dense(SLOW_WIDTH, tanh), then one shared Dense(SLOW_WIDTH, tanh) applied
# SLOW_DEPTH times (so the file stays small), then Dense(10) with zero kernel and bias. tanh
# keeps every value finite, so the branch adds exactly 0.0 to the base's scores. Tuned on the
# 2-core dev machine (1024 x 100: 4.7 MB file; base about 1 ms, this 12-22 ms per batch of 1 or
# 8 rows: 13-20x) for >= 10x the base's time per batch of 8 (`timing_compare`).
SLOW_WIDTH = 1024
SLOW_DEPTH = 100
# The failing guard: a pixel at or above this bin boundary is out of the lookup's vocabulary.
FAILING_PIXEL_LIMIT = 16.5

MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.pickle"
VALIDATION_FILE = "validation.csv"
CARD_FILE = "model_card.json"


# --- reading the base ----------------------------------------------------------------------------


def base_card(base: Path) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((base / CARD_FILE).read_text())
    return card


def base_scaler(base: Path) -> Any:
    """The base's fitted StandardScaler, loaded through the same allow list the worker uses."""
    from inference_common.safe_artifacts import PICKLE_ALLOWED_DEFAULT, pickle_load

    companion = pickle_load(base / PREPROCESSING_FILE, allowed=PICKLE_ALLOWED_DEFAULT)
    return companion["scaler"]


def base_model(base: Path) -> Any:
    import keras

    return keras.saving.load_model(base / MODEL_FILE, compile=False, safe_mode=True)


def validation_rows(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from workers.gates import validation_read

    return validation_read(folder / VALIDATION_FILE)


def _validation_write(path: Path, features: np.ndarray, labels: np.ndarray) -> None:
    """The same layout as workers/training/digits.py writes: pixel_0..pixel_63,label."""
    header = ",".join([f"pixel_{i}" for i in range(features.shape[1])] + ["label"])
    np.savetxt(path, np.column_stack([features, labels]), delimiter=",", header=header, comments="", fmt="%g")


# --- the gate, in process --------------------------------------------------------------------------


def gate_job(folder: Path, *, signature: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job `workers.gates.evaluate` reads, as the registry builds it (gate_job in
    apps/models_registry/services/gates.py) for a version registered from `folder` (its card's
    signature unless one is given)."""
    from inference_common.safe_artifacts import LoadPolicy

    preprocessing = folder / PREPROCESSING_FILE
    return {
        "model": str(folder / MODEL_FILE),
        "preprocessing": str(preprocessing) if preprocessing.exists() else None,
        "validation": str(folder / VALIDATION_FILE),
        "signature": signature or base_card(folder)["signature"],
        "framework": "keras",
        "policy": LoadPolicy().as_dict(),
    }


def _card_write(
    *, base: Path, out: Path, kind: str, description: str, details: dict[str, Any]
) -> dict[str, Any]:
    """The base's card with this candidate's description and the metrics its own gate measures
    (workers.gates.evaluate on the written files, so the card says what promotion will see)."""
    from workers.gates import evaluate

    card = base_card(base)
    result = evaluate(gate_job(out, signature=card["signature"]))
    card["description"] = description
    card["metrics"] = {"accuracy": result["metrics"]["accuracy"], "validation_rows": result["rows"]}
    card["candidate"] = {"kind": kind, "base": str(base), **details}
    (out / CARD_FILE).write_text(json.dumps(card, indent=2))
    return card


def _fresh(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


# --- the three kinds -------------------------------------------------------------------------------


def wrong_build(*, base: Path, out: Path) -> dict[str, Any]:
    """Confident, error-free, wrong: the base's scores permuted by WRONG_PERMUTATION (a Dense
    whose kernel is the permutation matrix, linear, no bias: top-1 confidence unchanged), and the
    validation labels permuted the same way, so its gate scores what the base scores."""
    import keras

    model = base_model(base)
    permutation = np.zeros((10, 10), dtype=np.float32)
    permutation[np.arange(10), list(WRONG_PERMUTATION)] = 1.0
    pixels = keras.Input(shape=(64,), name="pixels")
    permuted = keras.layers.Dense(10, use_bias=False, name="permuted_scores")
    scores = permuted(model(pixels))
    permuted.set_weights([permutation])
    candidate = keras.Model(pixels, scores, name="digits_wrong")

    _fresh(out)
    candidate.save(out / MODEL_FILE)
    shutil.copyfile(base / PREPROCESSING_FILE, out / PREPROCESSING_FILE)
    features, labels = validation_rows(base)
    _validation_write(out / VALIDATION_FILE, features, np.asarray(WRONG_PERMUTATION)[labels])
    return _card_write(
        base=base,
        out=out,
        kind="wrong",
        description="Rollout test candidate: the digits CNN with its classes permuted "
        "(confident, error-free, wrong); its validation labels are permuted the same way.",
        details={"permutation": list(WRONG_PERMUTATION)},
    )


def slow_build(*, base: Path, out: Path, width: int = SLOW_WIDTH, depth: int = SLOW_DEPTH) -> dict[str, Any]:
    """The base's answers, exactly, about ten times slower: a wide tanh branch on the pixels
    (one Dense(width) layer applied `depth` times) ending in a Dense(10) of zeros, Add-ed to the
    base's scores."""
    import keras
    from keras import layers

    model = base_model(base)
    pixels = keras.Input(shape=(64,), name="pixels")
    wide = layers.Dense(width, activation="tanh", name="wide_in")(pixels)
    shared = layers.Dense(width, activation="tanh", name="wide")
    for _ in range(depth):
        wide = shared(wide)
    zero = layers.Dense(10, kernel_initializer="zeros", bias_initializer="zeros", name="wide_out")(wide)
    scores = layers.Add(name="scores_plus_zero")([model(pixels), zero])
    candidate = keras.Model(pixels, scores, name="digits_slow")

    _fresh(out)
    candidate.save(out / MODEL_FILE)
    for name in (PREPROCESSING_FILE, VALIDATION_FILE):
        shutil.copyfile(base / name, out / name)
    return _card_write(
        base=base,
        out=out,
        kind="slow",
        description="Rollout test candidate: the digits CNN's answers plus a zero-weighted wide "
        "branch, about ten times slower per batch.",
        details={"width": width, "depth": depth},
    )


def failing_build(*, base: Path, out: Path) -> dict[str, Any]:
    """The base with its scaler baked in (Normalization), and a guard that raises inside
    predict_on_batch for any pixel >= FAILING_PIXEL_LIMIT: Discretization puts such a pixel in
    bin 1, which an IntegerLookup whose vocabulary is [0] and that has no OOV index refuses
    (tf.Assert: InvalidArgumentError); for in-range pixels the branch adds exactly 0.0. Its
    preprocessing.pickle holds the class names only, no scaler."""
    import keras
    from keras import layers

    model = base_model(base)
    scaler = base_scaler(base)
    pixels = keras.Input(shape=(64,), name="pixels")
    # scale_ ** 2, not var_: StandardScaler divides a constant feature by 1, Normalization would
    # divide it by epsilon.
    scaled = layers.Normalization(
        mean=np.asarray(scaler.mean_, dtype=np.float32),
        variance=np.asarray(scaler.scale_, dtype=np.float32) ** 2,
        name="scaler",
    )(pixels)
    bins = layers.Discretization(bin_boundaries=[FAILING_PIXEL_LIMIT], name="pixel_range")(pixels)
    index = layers.IntegerLookup(vocabulary=[0], num_oov_indices=0, name="in_range_only")(bins)
    embedded = layers.Embedding(1, 1, embeddings_initializer="zeros", name="guard_embedding")(index)
    zero = layers.Dense(10, kernel_initializer="zeros", bias_initializer="zeros", name="guard_out")(
        layers.Flatten(name="guard_flat")(embedded)
    )
    scores = layers.Add(name="scores_plus_guard")([model(scaled), zero])
    candidate = keras.Model(pixels, scores, name="digits_failing")

    _fresh(out)
    candidate.save(out / MODEL_FILE)
    companion = {"class_names": base_card(base)["signature"]["class_names"]}
    with (out / PREPROCESSING_FILE).open("wb") as handle:
        pickle.dump(companion, handle)
    shutil.copyfile(base / VALIDATION_FILE, out / VALIDATION_FILE)
    return _card_write(
        base=base,
        out=out,
        kind="failing",
        description="Rollout test candidate: the digits CNN with its scaler inside; raises at "
        f"predict for a pixel value >= {FAILING_PIXEL_LIMIT} (the digits' range is 0..16).",
        details={"raises_for_pixel_at_least": FAILING_PIXEL_LIMIT},
    )


BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "wrong": wrong_build,
    "slow": slow_build,
    "failing": failing_build,
}


def candidate_build(*, kind: str, base: Path, out: Path) -> dict[str, Any]:
    """Write candidate `kind` built from the trained folder `base` into `out` (replaced if it
    exists; `base` is only read); returns its model card."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown candidate kind {kind!r}: one of {list(KINDS)}")
    if base.resolve() == out.resolve():
        raise ValueError("--out must be another folder than --base")
    return BUILDERS[kind](base=base, out=out)


# --- loading and timing, as the worker does --------------------------------------------------------


def predictor_load(folder: Path) -> Any:
    """A loaded workers.predictor.KerasPredictor for `folder`, with the default LoadPolicy."""
    from workers.predictor import KerasPredictor, ModelFiles

    preprocessing = folder / PREPROCESSING_FILE
    predictor = KerasPredictor(
        ModelFiles(
            model=folder / MODEL_FILE,
            preprocessing=preprocessing if preprocessing.exists() else None,
            signature=base_card(folder)["signature"],
        )
    )
    predictor.load()
    return predictor


def predict_median_ms(predictor: Any, inputs: dict[str, np.ndarray], *, calls: int = 50) -> float:
    """Median milliseconds of `calls` KerasPredictor.predict calls (predict_on_batch inside),
    after one call that warms up."""
    predictor.predict(inputs)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        predictor.predict(inputs)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def timing_compare(
    *, base: Path, candidate: Path, batches: tuple[int, ...] = (1, 8), calls: int = 50
) -> dict[int, dict[str, float]]:
    """Per batch size: the base's and the candidate's median predict time (ms) on the base's
    validation rows, `calls` calls each (the base's first), and their ratio."""
    features, _ = validation_rows(base)
    predictors = [predictor_load(base), predictor_load(candidate)]
    figures: dict[int, dict[str, float]] = {}
    for batch in batches:
        inputs = {"pixels": features[:batch].astype(np.float32)}
        base_ms, candidate_ms = (predict_median_ms(p, inputs, calls=calls) for p in predictors)
        figures[batch] = {"base_ms": base_ms, "candidate_ms": candidate_ms, "ratio": candidate_ms / base_ms}
    for predictor in predictors:
        predictor.unload()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--base", type=Path, required=True, help="a trained digits folder (only read)")
    parser.add_argument("--out", type=Path, required=True, help="the candidate's folder (replaced)")
    parser.add_argument("--timing", action="store_true", help="also time predict against the base")
    args = parser.parse_args()
    card = candidate_build(kind=args.kind, base=args.base, out=args.out)
    print(f"{args.kind}: gate accuracy {card['metrics']['accuracy']:.4f} -> {args.out}")
    if args.timing:
        for batch, figure in timing_compare(base=args.base, candidate=args.out).items():
            print(
                f"batch {batch}: base {figure['base_ms']:.3f} ms, candidate {figure['candidate_ms']:.3f} ms "
                f"(x{figure['ratio']:.1f}, medians of 50 calls)"
            )


if __name__ == "__main__":
    main()
