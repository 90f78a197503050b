"""Turn JSON input into a tensor that matches the model's signature, or say exactly what is wrong.

Runs in the API before anything is enqueued, so a worker never sees a malformed batch. Uses
numpy on the whole nested list at once: per-element serializer fields would cost more than the
inference itself for a small model.
"""

from typing import Any

import numpy as np
from django.conf import settings

from apps.predictions.errors import bad_request
from apps.predictions.wire import V2_TO_NUMPY

NUMERIC_KINDS = {"f", "i", "u"}


def tensor_from_json(value: Any, *, spec: dict[str, Any], field: str) -> np.ndarray:
    """Validate nested lists against `spec` (`{"name", "datatype", "shape"}`)."""
    if not isinstance(value, list):
        raise bad_request(f"expected a list of numbers (a tensor), got {type(value).__name__}", field=field)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise bad_request(
            "ragged or malformed tensor: every row must have the same length", field=field
        ) from None
    return tensor_check(array, spec=spec, field=field)


def tensor_check(array: np.ndarray, *, spec: dict[str, Any], field: str) -> np.ndarray:
    """Check dtype, shape, finiteness and batch size of an already-built array."""
    if array.size == 0:
        raise bad_request("tensor is empty", field=field)
    if array.dtype.kind not in NUMERIC_KINDS:
        kind = "booleans" if array.dtype.kind == "b" else "non-numeric values"
        raise bad_request(f"tensor contains {kind}; expected {spec['datatype']} numbers", field=field)
    expected = spec["shape"]
    if array.ndim != len(expected) or any(
        want not in (-1, got) for want, got in zip(expected, array.shape, strict=True)
    ):
        raise bad_request(f"shape {list(array.shape)} does not match the model's {expected}", field=field)
    if array.shape[0] > settings.INFERENCE_MAX_BATCH_ROWS:
        raise bad_request(
            f"{array.shape[0]} rows exceed the limit of {settings.INFERENCE_MAX_BATCH_ROWS} per request",
            field=field,
        )
    dtype = np.dtype(V2_TO_NUMPY[spec["datatype"]])
    if dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            converted = array.astype(dtype)
        if not np.isfinite(converted).all():
            raise bad_request(
                f"tensor contains NaN, Inf or values outside the {spec['datatype']} range", field=field
            )
        return converted
    info = np.iinfo(dtype)
    if array.dtype.kind == "f" or array.min() < info.min or array.max() > info.max:
        raise bad_request(f"values must be integers within the {spec['datatype']} range", field=field)
    return array.astype(dtype)
