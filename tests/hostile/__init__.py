"""Hostile artifacts for the safe-loading tests: each would leave a marker file if loading it ran
the code it carries. Built with the real libraries (pickle, Keras, openpyxl), never by hand."""

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import ROOT


class _Touch:
    """Unpickling this calls os.system("touch <marker>")."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def pickle_write(path: Path, *, marker: Path) -> Path:
    """A preprocessing pickle shaped like the demo's ({"scaler": ..., "class_names": ...})
    whose scaler runs a shell command when unpickled."""
    with path.open("wb") as handle:
        pickle.dump({"scaler": _Touch(marker), "class_names": [str(i) for i in range(10)]}, handle)
    return path


KERAS_LAMBDA = """
import sys
import keras
marker, out = sys.argv[1], sys.argv[2]
# The lambda creates the marker whenever it runs: when Keras rebuilds the layer at load, it does.
# The marker's path is a constant inside the lambda's own code, so it runs wherever it is loaded.
touch = keras.layers.Lambda(eval(f"lambda x: (open({marker!r}, 'w').close(), x)[1]"))
model = keras.Sequential([keras.Input((64,)), touch, keras.layers.Dense(10, activation="softmax")])
model.save(out)
"""


def keras_lambda_write(path: Path, *, marker: Path) -> Path:
    """A `.keras` or `.h5` digits-shaped model whose Lambda layer creates `marker` when run.

    Written by a subprocess, so this process never imports TensorFlow."""
    subprocess.run(
        [sys.executable, "-c", KERAS_LAMBDA, str(marker), str(path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    return path


def xlsx_formula_write(path: Path, *, rows: np.ndarray, labels: np.ndarray) -> Path:
    """A validation workbook of the given rows whose first label is a formula."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append([f"pixel_{i}" for i in range(rows.shape[1])] + ["label"])
    for row, label in zip(rows, labels, strict=True):
        sheet.append([float(v) for v in row] + [int(label)])
    sheet.cell(row=2, column=rows.shape[1] + 1).value = '=HYPERLINK("http://127.0.0.1/", 0)'
    book.save(path)
    return path


def keras_without_weights(source: Path, target: Path) -> Path:
    """A `.keras` archive that passes every check (its config is the real model's) but cannot
    load: its weights file is left out. Stands for a version that is harmless yet broken."""
    import zipfile

    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            if not item.filename.endswith(".h5"):
                copy.writestr(item, original.read(item))
    return target


def key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """An EC P-256 private key and its public key (PEM), as `openssl` makes them for signing."""
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    subprocess.run(
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", private], check=True
    )
    subprocess.run(
        ["openssl", "ec", "-in", private, "-pubout", "-out", public], check=True, capture_output=True
    )
    return private, public
