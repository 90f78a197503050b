"""Reading a version's artifacts as data only: loading one must never run code it carries.

The registry (at upload), the gate process and the worker child call these same functions, so
an artifact is judged the same way wherever it is met:

- pickled companions (`.pickle`, `.pkl`): never `pickle.load`. Every global a pickle names must
  be on an allow list (numpy arrays and dtypes, scikit-learn preprocessing objects, plain
  containers: `INFERENCE_PICKLE_ALLOWED_GLOBALS`). `pickle_check` runs the pickle machine with
  inert stand-ins for those globals (nothing is imported or called: the API process, which has
  no scikit-learn, checks uploads with it); `pickle_load` builds the real objects with the same
  list enforced by `Unpickler.find_class`.
- Keras models (`.keras`, legacy `.h5`): `keras_check` reads the model's JSON config without
  Keras and refuses `Lambda` layers (their Python code runs at load) and objects from outside
  Keras that are not allowed (`INFERENCE_KERAS_ALLOWED_OBJECTS`); the worker then loads with
  Keras' safe mode on as a second line.
- Validation tables (`.csv`, `.xlsx`): numbers only, within size and row limits; an `.xlsx`
  cell that holds a formula is refused (openpyxl never evaluates one; a cached result could be
  anything its author left there).
"""

import io
import json
import pickle
import zipfile
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

# What a preprocessing pickle may name: data containers and the scikit-learn transformers a
# Keras model is fed through. Exact `module.name` entries; nothing else is ever imported.
PICKLE_ALLOWED_DEFAULT = (
    "builtins.set",
    "builtins.frozenset",
    "builtins.complex",
    "builtins.slice",
    "builtins.object",
    "collections.OrderedDict",
    "copyreg._reconstructor",
    "_codecs.encode",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy.core.numeric._frombuffer",
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy._core.numeric._frombuffer",
    *(
        f"numpy.{t}"
        for t in (
            "bool_",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "float16",
            "float32",
            "float64",
            "str_",
            "bytes_",
            "object_",
        )
    ),
    *(
        f"sklearn.preprocessing._data.{c}"
        for c in ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "Normalizer")
    ),
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
)
# Protocol 0-2 pickles name Python 2's modules.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
# Keras layers that carry Python code (bytecode or a function's name to import) in their config.
KERAS_CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__"}
KERAS_CONFIG_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class LoadPolicy:
    """What loading a version may accept: settings, plus a superuser's trust in one version."""

    pickle_allowed: tuple[str, ...] = PICKLE_ALLOWED_DEFAULT
    keras_allowed: tuple[str, ...] = ()
    # Keras' unsafe deserialization (a Lambda layer) for this version only, trusted with a reason.
    unsafe_trusted: bool = False
    table_max_rows: int = 1_000_000
    table_max_bytes: int = 256 * 1024 * 1024

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoadPolicy":
        return cls(
            pickle_allowed=tuple(data["pickle_allowed"]),
            keras_allowed=tuple(data["keras_allowed"]),
            unsafe_trusted=bool(data["unsafe_trusted"]),
            table_max_rows=int(data["table_max_rows"]),
            table_max_bytes=int(data["table_max_bytes"]),
        )


class ArtifactRefused(ValueError):
    """An artifact whose loading could run code, or that is not the data it claims to be."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename}: refused: {reason}")
        self.filename = filename
        self.reason = reason


# --- pickles -------------------------------------------------------------------------------------


def _global_name(module: str, name: str) -> str:
    return f"{_PY2_MODULES.get(module, module)}.{name}"


class _Inert:
    """Stands for an allowed global while a pickle is only checked: takes any arguments and
    state, does nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(
        self, file: io.BufferedIOBase, *, filename: str, allowed: Collection[str], inert: bool
    ) -> None:
        super().__init__(file)
        self._filename = filename
        self._allowed = frozenset(allowed)
        self._inert = inert

    def find_class(self, module: str, name: str) -> Any:
        qualified = _global_name(module, name)
        if qualified not in self._allowed:
            raise ArtifactRefused(
                self._filename, f"it names {qualified}, which is not on the pickle allow list"
            )
        return type(name, (_Inert,), {}) if self._inert else super().find_class(module, name)

    def persistent_load(self, pid: Any) -> NoReturn:
        raise ArtifactRefused(self._filename, "it refers to persistent objects outside the file")


def _unpickle(path: Path, *, allowed: Collection[str], inert: bool) -> Any:
    with path.open("rb") as handle:
        try:
            return _AllowListUnpickler(handle, filename=path.name, allowed=allowed, inert=inert).load()
        except ArtifactRefused:
            raise
        except Exception as exc:  # a truncated or malformed pickle: data we cannot read
            raise ArtifactRefused(path.name, f"not a readable pickle ({type(exc).__name__}: {exc})") from exc


def pickle_check(path: Path, *, allowed: Collection[str]) -> None:
    """Refuse a pickle that names any global off the allow list, without importing or calling
    anything: the globals it names become inert stand-ins."""
    _unpickle(path, allowed=allowed, inert=True)


def pickle_load(path: Path, *, allowed: Collection[str]) -> Any:
    """The objects of a pickle whose every global is on the allow list (else ArtifactRefused)."""
    return _unpickle(path, allowed=allowed, inert=False)


# --- Keras models --------------------------------------------------------------------------------


def _keras_config(path: Path) -> Any:
    name = path.name
    if path.suffix.lower() == ".h5":
        import h5py  # only where an .h5 is met (a legacy format)

        try:
            with h5py.File(path, "r") as handle:
                raw = handle.attrs.get("model_config")
        except OSError as exc:
            raise ArtifactRefused(name, f"not a readable HDF5 file ({exc})") from exc
        if raw is None:
            raise ArtifactRefused(name, "it holds weights only, no model config")
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("config.json")
                if info.file_size > KERAS_CONFIG_MAX_BYTES:
                    raise ArtifactRefused(name, f"its config.json is {info.file_size} bytes")
                raw = archive.read(info)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ArtifactRefused(name, f"not a Keras archive with a config.json ({exc})") from exc
    try:
        return json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise ArtifactRefused(name, f"its model config is not JSON ({exc})") from exc


def _configs(node: Any) -> Iterator[dict[str, Any]]:
    """Every serialized object in a Keras config: dicts with a `class_name`, depth first."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _configs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _configs(value)


def _from_keras(module: Any) -> bool:
    return module is None or module == "keras" or str(module).startswith("keras.")


def keras_check(path: Path, *, allowed_objects: Collection[str] = ()) -> None:
    """Refuse a `.keras` / `.h5` model whose config holds a Lambda layer, or an object from
    outside Keras not named in `allowed_objects` (by its registered name, `package>Name`)."""
    for obj in _configs(_keras_config(path)):
        class_name = str(obj["class_name"])
        layer = (obj.get("config") or {}).get("name") if isinstance(obj.get("config"), dict) else None
        where = f" (layer {layer!r})" if layer else ""
        if class_name in KERAS_CODE_LAYERS:
            raise ArtifactRefused(
                path.name, f"a {class_name} layer{where} runs Python code when the model is loaded"
            )
        registered = obj.get("registered_name") or class_name
        custom = not _from_keras(obj.get("module")) or ">" in str(registered)
        if custom and registered not in allowed_objects:
            origin = obj.get("module") or "outside Keras"
            raise ArtifactRefused(
                path.name,
                f"{registered}{where} comes from {origin}, not from Keras, "
                "and is not in INFERENCE_KERAS_ALLOWED_OBJECTS",
            )


# --- validation tables ---------------------------------------------------------------------------


def _size_check(path: Path, *, max_bytes: int) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise ArtifactRefused(path.name, f"{size} bytes, more than the {max_bytes} allowed")


def _xlsx_rows(path: Path, *, max_rows: int, max_bytes: int) -> list[list[Any]]:
    from openpyxl import load_workbook
    from openpyxl.utils import get_column_letter

    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise ArtifactRefused(path.name, f"not an .xlsx workbook ({exc})") from exc
    if unpacked > max_bytes:
        raise ArtifactRefused(path.name, f"unpacks to {unpacked} bytes, more than the {max_bytes} allowed")
    # read_only streams the sheet; data_only=False shows formulas as formulas, so they are seen.
    workbook = load_workbook(path, read_only=True, data_only=False, keep_links=False)
    try:
        rows = []
        for number, row in enumerate(workbook.worksheets[0].iter_rows(min_row=2), start=2):
            if number - 1 > max_rows:
                raise ArtifactRefused(path.name, f"more than {max_rows} rows")
            for column, cell in enumerate(row, start=1):
                if getattr(cell, "data_type", None) == "f":
                    raise ArtifactRefused(
                        path.name,
                        f"cell {get_column_letter(column)}{number} holds a formula; "
                        "a validation set must hold plain numbers",
                    )
            values = [cell.value for cell in row]
            if values and values[0] is not None:
                rows.append(values)
        return rows
    finally:
        workbook.close()


def table_read(path: Path, *, max_rows: int, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """A validation set: feature columns and the last column as integer labels, from a `.csv`
    (with a header row) or an `.xlsx` (first sheet, header row), numbers only."""
    _size_check(path, max_bytes=max_bytes)
    try:
        if path.suffix.lower() == ".xlsx":
            table = np.array(_xlsx_rows(path, max_rows=max_rows, max_bytes=max_bytes), dtype=np.float64)
        else:
            table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, max_rows=max_rows + 1)
            if len(table) > max_rows:
                raise ArtifactRefused(path.name, f"more than {max_rows} rows")
    except ArtifactRefused:
        raise
    except (ValueError, TypeError) as exc:
        raise ArtifactRefused(path.name, f"not a table of numbers ({exc})") from exc
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] < 2:
        raise ArtifactRefused(path.name, "needs at least one row of features and a label column")
    return table[:, :-1], table[:, -1].astype(np.int64)


# --- one artifact, by its kind -------------------------------------------------------------------

MODEL_SUFFIXES = {".keras", ".h5"}
PICKLE_SUFFIXES = {".pickle", ".pkl"}
TABLE_SUFFIXES = {".csv", ".xlsx"}


def artifact_check(path: Path, *, policy: LoadPolicy) -> None:
    """Refuse (ArtifactRefused) an artifact whose loading could run code or that is not the data
    its name says; runs nothing it carries and needs neither Keras nor scikit-learn."""
    suffix = path.suffix.lower()
    if suffix in MODEL_SUFFIXES and not policy.unsafe_trusted:
        keras_check(path, allowed_objects=policy.keras_allowed)
    elif suffix in PICKLE_SUFFIXES:
        pickle_check(path, allowed=policy.pickle_allowed)
    elif suffix in TABLE_SUFFIXES:
        table_read(path, max_rows=policy.table_max_rows, max_bytes=policy.table_max_bytes)
