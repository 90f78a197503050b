"""Train the demo model: a small Keras CNN on scikit-learn's bundled 8x8 digits (no download).

Writes to the output folder the artifacts the registry takes:
  model.keras          the trained CNN (input: 64 floats, output: 10 class scores)
  preprocessing.pickle {"scaler": StandardScaler, "class_names": [...]} fitted on training data
  validation.csv       the held-out set (64 feature columns + label), for gates and tests
  model_card.json      name, signature, metrics (held-out accuracy)

Usage: python -m workers.training.digits --out var/demo/digits [--epochs 40] [--seed 0]
"""

import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "digits"
N_FEATURES = 64
CLASS_NAMES = [str(d) for d in range(10)]


def dataset_split(*, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 1,797 digits split into 1,437 for training and 360 held out (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=360, stratify=y, random_state=seed)
    return x_train, x_test, y_train, y_test


def model_build() -> Any:
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=(N_FEATURES,), name="pixels"),
            layers.Reshape((8, 8, 1)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(0.2),
            layers.Dense(10, activation="softmax", name="scores"),
        ],
        name="digits_cnn",
    )


def signature() -> dict[str, Any]:
    return {
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, N_FEATURES]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, len(CLASS_NAMES)]}],
        "class_names": CLASS_NAMES,
    }


def train(*, out: Path, epochs: int, seed: int) -> dict[str, Any]:
    import keras
    from sklearn.preprocessing import StandardScaler

    keras.utils.set_random_seed(seed)
    x_train, x_test, y_train, y_test = dataset_split(seed=seed)
    scaler = StandardScaler().fit(x_train)

    model = model_build()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        scaler.transform(x_train),
        y_train,
        epochs=epochs,
        batch_size=32,
        validation_split=0.1,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    scores = model(scaler.transform(x_test).astype(np.float32), training=False)
    accuracy = float(np.mean(np.argmax(np.asarray(scores), axis=1) == y_test))

    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    with (out / "preprocessing.pickle").open("wb") as handle:
        pickle.dump({"scaler": scaler, "class_names": CLASS_NAMES}, handle)
    header = ",".join([f"pixel_{i}" for i in range(N_FEATURES)] + ["label"])
    rows = np.column_stack([x_test, y_test])
    np.savetxt(out / "validation.csv", rows, delimiter=",", header=header, comments="", fmt="%g")
    card = {
        "name": MODEL_NAME,
        "description": "Keras CNN on scikit-learn's 8x8 digits: 64 pixel values (0-16) in, "
        "10 class scores out.",
        "signature": signature(),
        "metrics": {"accuracy": accuracy, "validation_rows": len(y_test)},
        # Promotion gate: a version must score at least this on its validation set.
        "gate": {"metric": "accuracy", "minimum": 0.9},
        "framework": {"keras": keras.__version__},
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    card = train(out=args.out, epochs=args.epochs, seed=args.seed)
    print(f"held-out accuracy: {card['metrics']['accuracy']:.4f} -> {args.out}")


if __name__ == "__main__":
    main()
