"""BYTES inputs: TF Serving's {"b64": ...}, Open Inference Protocol strings and length-prefixed
binary elements, validated into object arrays of bytes and carried across the broker."""

import base64

import msgpack
import numpy as np

from apps.predictions.selectors import ServedModel
from apps.predictions.services import request_fingerprint
from apps.predictions.transports import tfserving
from inference_common.tensor_store import batch_bytes
from inference_common.wire import tensor_decode, tensor_encode

SIGNATURE = {
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}],
    "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
}
SERVED = ServedModel(name="words", version=1, signature=SIGNATURE)
PNG = b"\x89PNG\r\n\x1a\n\x00\xff"


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def test_bytes_tensors_cross_the_broker_inline_and_fingerprint_by_content() -> None:
    array = tfserving.inputs_decode({"instances": [[b64(PNG)], ["dog"]]}, SERVED)["text"]
    wire = msgpack.unpackb(msgpack.packb(tensor_encode(array)))
    decoded = tensor_decode(wire)
    assert decoded.dtype == object and decoded.tolist() == array.tolist()
    assert batch_bytes([{"id": "r", "inputs": {"text": tensor_encode(array)}}]) == 0  # never offloaded
    same = tfserving.inputs_decode({"instances": [[b64(PNG)], ["dog"]]}, SERVED)
    other = tfserving.inputs_decode({"instances": [[b64(PNG)], ["cat"]]}, SERVED)
    assert request_fingerprint(SERVED, {"text": array}) == request_fingerprint(SERVED, same)
    assert request_fingerprint(SERVED, {"text": array}) != request_fingerprint(SERVED, other)
    assert np.array_equal(decoded, array)
