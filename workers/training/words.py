"""Train a tiny text model with a BYTES (string) input: the demo of BYTES inputs (TF Serving's
{"b64": ...}, Open Inference Protocol strings). It tells whether a word names an animal, a
colour or a fruit.

Writes model.keras and model_card.json (no validation set: the promotion gates and drift
statistics read numeric .csv/.xlsx files, so this model is deployed directly).

Usage: python -m workers.training.words --out var/demo/words
"""

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

WORDS = {
    "animal": ["cat", "dog", "horse", "cow", "mouse", "tiger", "wolf", "sheep"],
    "colour": ["red", "blue", "green", "yellow", "purple", "orange-red", "black", "white"],
    "fruit": ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"],
}
CLASS_NAMES = list(WORDS)


def signature() -> dict[str, Any]:
    return {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, len(CLASS_NAMES)]}],
        "class_names": CLASS_NAMES,
    }


def train(*, out: Path, seed: int = 0) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    vocabulary = [w for words in WORDS.values() for w in words]
    text = keras.Input(shape=(1,), dtype="string", name="text")
    one_hot = keras.layers.StringLookup(vocabulary=vocabulary, output_mode="one_hot", name="lookup")(text)
    scores = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name="scores")(one_hot)
    model = keras.Model(text, scores, name="words")
    x = np.array([[w] for words in WORDS.values() for w in words] * 20)
    y = np.array([i for i, words in enumerate(WORDS.values()) for _ in words] * 20)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(tf.constant(x), y, epochs=30, verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    card = {
        "name": "words",
        "description": "Word -> animal / colour / fruit (a BYTES-input demo)",
        "signature": signature(),
        "metrics": {"train_accuracy": float(history.history["accuracy"][-1])},
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(json.dumps(train(out=args.out)["metrics"]))


if __name__ == "__main__":
    main()
