import msgpack
import numpy as np
import pytest

from inference_common.wire import tensor_decode, tensor_encode


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "uint8", "bool", "float16"])
def test_round_trip_through_msgpack(dtype: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    wire = msgpack.unpackb(msgpack.packb(tensor_encode(array)), raw=False)
    assert isinstance(wire["data"], bytes)
    decoded = tensor_decode(wire)
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


def test_big_endian_input_is_sent_little_endian() -> None:
    array = np.arange(4, dtype=">f4")
    wire = tensor_encode(array)
    assert wire["data"] == np.arange(4, dtype="<f4").tobytes()
    np.testing.assert_array_equal(tensor_decode(wire), array)
