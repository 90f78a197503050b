"""Turn JSON input into a tensor that matches the model's signature, or say exactly what is wrong.

Runs in the API before anything is enqueued, so a worker never sees a malformed batch. Uses
numpy on the whole nested list at once: per-element serializer fields would cost more than the
inference itself for a small model.
"""

import base64
import binascii
from typing import Any

import numpy as np
from django.conf import settings

from apps.predictions.errors import bad_request
from inference_common.wire import V2_TO_NUMPY, bytes_array

NUMERIC_KINDS = {"f", "i", "u"}


def tensor_from_json(value: Any, *, spec: dict[str, Any], field: str) -> np.ndarray:
    """Validate nested lists against `spec` (`{"name", "datatype", "shape"}`)."""
    if spec["datatype"] == "BYTES":
        return shape_check(bytes_from_json(value, field=field), spec=spec, field=field)
    if not isinstance(value, list):
        raise bad_request(f"expected a list of numbers (a tensor), got {type(value).__name__}", field=field)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise bad_request(
            "ragged or malformed tensor: every row must have the same length", field=field
        ) from None
    return tensor_check(array, spec=spec, field=field)


def _bytes_leaf(value: Any, *, field: str) -> bytes:
    """TF Serving sends binary strings as {"b64": "<base64>"}; plain strings are UTF-8 text."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise bad_request("b64 is not valid base64", field=field) from None
    raise bad_request('BYTES elements must be strings or {"b64": "<base64>"} objects', field=field)


def bytes_from_json(value: Any, *, field: str) -> np.ndarray:
    """Nested lists of strings or {"b64"} objects as an object array of bytes."""

    def leaves(node: Any, depth: int) -> tuple[list[bytes], list[int]]:
        if not isinstance(node, list):
            return [_bytes_leaf(node, field=field)], []
        if depth > 32 or not node:
            raise bad_request("malformed or empty BYTES tensor", field=field)
        parts = [leaves(child, depth + 1) for child in node]
        shapes = {tuple(shape) for _, shape in parts}
        if len(shapes) != 1:
            raise bad_request("ragged tensor: every row must have the same length", field=field)
        return [item for items, _ in parts for item in items], [len(node), *parts[0][1]]

    if not isinstance(value, list):
        raise bad_request(f"expected a list (a tensor), got {type(value).__name__}", field=field)
    items, shape = leaves(value, 0)
    return bytes_array(items, shape)


def shape_check(array: np.ndarray, *, spec: dict[str, Any], field: str) -> np.ndarray:
    """Non-empty, the signature's shape, at most INFERENCE_MAX_BATCH_ROWS rows; any dtype."""
    if array.size == 0:
        raise bad_request("tensor is empty", field=field)
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
    return array


def tensor_check(array: np.ndarray, *, spec: dict[str, Any], field: str) -> np.ndarray:
    """Check dtype, shape, finiteness and batch size of an already-built array."""
    if array.size and array.dtype.kind not in NUMERIC_KINDS:
        kind = "booleans" if array.dtype.kind == "b" else "non-numeric values"
        raise bad_request(f"tensor contains {kind}; expected {spec['datatype']} numbers", field=field)
    shape_check(array, spec=spec, field=field)
    dtype = np.dtype(V2_TO_NUMPY[spec["datatype"]])
    if dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            converted = array.astype(dtype, copy=False)
        if not np.isfinite(converted).all():
            raise bad_request(
                f"tensor contains NaN, Inf or values outside the {spec['datatype']} range", field=field
            )
        return converted
    info = np.iinfo(dtype)
    if array.dtype.kind == "f" or array.min() < info.min or array.max() > info.max:
        raise bad_request(f"values must be integers within the {spec['datatype']} range", field=field)
    return array.astype(dtype, copy=False)
