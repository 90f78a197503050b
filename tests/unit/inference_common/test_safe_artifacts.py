"""Loading an artifact never runs code it carries: pickles, Keras models and validation tables."""

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from inference_common.safe_artifacts import (
    PICKLE_ALLOWED_DEFAULT,
    ArtifactRefused,
    keras_check,
    pickle_check,
    pickle_load,
    table_read,
)
from tests.hostile import keras_lambda_write, pickle_write, xlsx_formula_write

ALLOWED = PICKLE_ALLOWED_DEFAULT


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_preprocessing_objects_load_through_the_allow_list(tmp_path: Path, protocol: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4))
    companion = {
        "scaler": StandardScaler().fit(x),
        "minmax": MinMaxScaler().fit(x),
        "onehot": OneHotEncoder().fit([["a"], ["b"]]),
        "class_names": ["a", "b"],
        "ordered": OrderedDict(k=np.float32(1.5)),
        "set": {1, 2},
    }
    path = tmp_path / "preprocessing.pickle"
    path.write_bytes(pickle.dumps(companion, protocol=protocol))

    pickle_check(path, allowed=ALLOWED)
    loaded = pickle_load(path, allowed=ALLOWED)

    np.testing.assert_allclose(loaded["scaler"].transform(x), companion["scaler"].transform(x))
    np.testing.assert_allclose(loaded["minmax"].transform(x), companion["minmax"].transform(x))
    assert loaded["onehot"].transform([["b"]]).toarray().tolist() == [[0.0, 1.0]]
    assert loaded["ordered"] == OrderedDict(k=1.5) and loaded["set"] == {1, 2}


@pytest.mark.parametrize("check", [pickle_check, pickle_load])
def test_a_pickle_that_would_run_a_command_is_refused_and_runs_nothing(tmp_path: Path, check) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "ran"
    path = pickle_write(tmp_path / "preprocessing.pickle", marker=marker)

    with pytest.raises(ArtifactRefused) as refused:
        check(path, allowed=ALLOWED)

    assert not marker.exists()
    assert refused.value.filename == "preprocessing.pickle"
    assert "posix.system" in refused.value.reason or "os.system" in refused.value.reason
    assert "allow list" in str(refused.value)


def test_a_global_hidden_behind_the_memo_is_still_seen(tmp_path: Path) -> None:
    """Protocol 4 names globals by strings fetched from the memo; the check runs the real pickle
    machine, so the name it resolves is the one judged."""
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps([np.float64, np.float64, print], protocol=4))
    with pytest.raises(ArtifactRefused, match=r"builtins\.print"):
        pickle_check(path, allowed=ALLOWED)


def test_garbage_and_persistent_ids_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pickle"
    garbage.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ArtifactRefused, match="not a readable pickle"):
        pickle_check(garbage, allowed=ALLOWED)
    persistent = tmp_path / "persistent.pickle"
    persistent.write_bytes(b"\x80\x02X\x01\x00\x00\x00aQ.")  # BINPERSID
    with pytest.raises(ArtifactRefused, match="persistent"):
        pickle_check(persistent, allowed=ALLOWED)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_keras_model_with_a_lambda_layer_is_refused(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "ran"
    path = keras_lambda_write(tmp_path / f"model{suffix}", marker=marker)
    marker.unlink(missing_ok=True)  # saving traced the lambda once

    with pytest.raises(ArtifactRefused, match=r"Lambda layer .* runs Python code"):
        keras_check(path)
    assert not marker.exists()


def test_the_demo_model_passes_the_keras_check(demo_model_dir: Path) -> None:
    keras_check(demo_model_dir / "model.keras")


def test_objects_from_outside_keras_are_refused_unless_allowed(tmp_path: Path) -> None:
    import json
    import zipfile

    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "layers": [
                {
                    "module": "my_pkg.layers",
                    "class_name": "Gate",
                    "registered_name": "my_pkg>Gate",
                    "config": {"name": "gate"},
                },
            ]
        },
    }
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    with pytest.raises(ArtifactRefused, match=r"my_pkg>Gate \(layer 'gate'\) comes from my_pkg.layers"):
        keras_check(path)
    keras_check(path, allowed_objects={"my_pkg>Gate"})

    not_a_model = tmp_path / "weights.keras"
    not_a_model.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    with pytest.raises(ArtifactRefused, match=r"config\.json"):
        keras_check(not_a_model)


def test_validation_tables_are_numbers_within_limits(tmp_path: Path) -> None:
    rows = np.arange(12, dtype=np.float64).reshape(4, 3)
    labels = np.array([0, 1, 0, 1])
    csv = tmp_path / "validation.csv"
    np.savetxt(csv, np.column_stack([rows, labels]), delimiter=",", header="a,b,c,label", comments="")

    features, got = table_read(csv, max_rows=10, max_bytes=10_000)
    np.testing.assert_array_equal(features, rows)
    assert got.tolist() == labels.tolist()
    with pytest.raises(ArtifactRefused, match="more than 3 rows"):
        table_read(csv, max_rows=3, max_bytes=10_000)
    with pytest.raises(ArtifactRefused, match="more than the 10 allowed"):
        table_read(csv, max_rows=10, max_bytes=10)
    words = tmp_path / "words.csv"
    words.write_text("a,label\nhello,1\n")
    with pytest.raises(ArtifactRefused, match="not a table of numbers"):
        table_read(words, max_rows=10, max_bytes=10_000)


def test_an_xlsx_formula_is_refused_naming_the_cell(tmp_path: Path) -> None:
    rows = np.ones((3, 2))
    path = xlsx_formula_write(tmp_path / "validation.xlsx", rows=rows, labels=np.array([1, 0, 1]))
    with pytest.raises(ArtifactRefused, match="cell C2 holds a formula"):
        table_read(path, max_rows=10, max_bytes=1_000_000)
    with pytest.raises(ArtifactRefused, match="unpacks to"):
        table_read(path, max_rows=10, max_bytes=path.stat().st_size + 1)
