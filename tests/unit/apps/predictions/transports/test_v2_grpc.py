"""The gRPC adapter's parsing and rendering, and its generated modules against the .proto."""

import numpy as np
import pytest

from apps.predictions.errors import ApiError
from apps.predictions.selectors import ServedModel
from apps.predictions.transports.oip import generate
from apps.predictions.transports.oip import grpc_predict_v2_pb2 as pb
from apps.predictions.transports.v2_grpc import inputs_decode, priority_parameter, response_render
from apps.predictions.types import InferenceResponse

SIGNATURE = {
    "inputs": [
        {"name": "pixels", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "words", "datatype": "BYTES", "shape": [-1]},
    ],
    "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 2]}],
}
SERVED = ServedModel(name="toy", version=3, signature=SIGNATURE)


def test_the_generated_modules_match_the_proto() -> None:
    assert generate.differing() == []


def raw_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="toy", id="r1")
    request.inputs.add(name="pixels", datatype="FP32", shape=[2, 4])
    request.inputs.add(name="words", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(np.arange(8, dtype="<f4").tobytes())
    request.raw_input_contents.append(b"".join(len(w).to_bytes(4, "little") + w for w in (b"hi", b"there")))
    return request


def test_raw_and_typed_contents_decode_to_the_same_tensors() -> None:
    raw = inputs_decode(raw_request(), SERVED)
    typed = pb.ModelInferRequest(model_name="toy")
    pixels = typed.inputs.add(name="pixels", datatype="FP32", shape=[2, 4])
    pixels.contents.fp32_contents.extend(range(8))
    words = typed.inputs.add(name="words", datatype="BYTES", shape=[2])
    words.contents.bytes_contents.extend([b"hi", b"there"])
    decoded = inputs_decode(typed, SERVED)
    for name in ("pixels", "words"):
        assert decoded[name].shape == raw[name].shape
        assert decoded[name].tolist() == raw[name].tolist()
    assert raw["words"].tolist() == [b"hi", b"there"]


@pytest.mark.parametrize(
    ("spoil", "field"),
    [
        (lambda r: r.inputs[0].__setattr__("datatype", "INT32"), "inputs.pixels.datatype"),
        (lambda r: r.inputs[0].__setattr__("name", "image"), "inputs[0].name"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 5), "inputs.pixels.raw_input_contents"),
        (lambda r: r.raw_input_contents.__setitem__(1, b"\0\0"), "inputs.words.raw_input_contents"),
        (lambda r: r.raw_input_contents.pop(), "raw_input_contents"),
        (lambda r: r.inputs[0].contents.fp32_contents.append(1.0), "inputs.pixels.contents"),
        (lambda r: r.outputs.add(name="nope"), "outputs"),
        (lambda r: r.inputs.pop(), "raw_input_contents"),
    ],
)
def test_a_bad_tensor_is_a_400_naming_the_field(spoil: object, field: str) -> None:
    request = raw_request()
    spoil(request)  # type: ignore[operator]
    with pytest.raises(ApiError) as raised:
        inputs_decode(request, SERVED)
    assert raised.value.status == 400
    assert raised.value.field == field


def test_the_answer_takes_the_form_of_the_request_and_only_the_outputs_asked_for() -> None:
    outputs = {"scores": np.array([[0.25, 0.75]], dtype=np.float32), "extra": np.array([b"x"], dtype=object)}
    response = InferenceResponse(id="task-1", served=SERVED, outputs=outputs)
    asked = pb.ModelInferRequest(id="mine")
    asked.outputs.add(name="scores")
    raw = response_render(response, asked, raw=True)
    assert raw.id == "mine" and raw.model_version == "3"
    assert [o.name for o in raw.outputs] == ["scores"]
    assert np.frombuffer(raw.raw_output_contents[0], dtype="<f4").tolist() == [0.25, 0.75]
    typed = response_render(response, pb.ModelInferRequest(), raw=False)
    assert typed.id == "task-1" and not typed.raw_output_contents
    assert [o.name for o in typed.outputs] == ["scores", "extra"]
    assert list(typed.outputs[0].contents.fp32_contents) == [0.25, 0.75]
    assert list(typed.outputs[1].contents.bytes_contents) == [b"x"]
    half = InferenceResponse(id="t", served=SERVED, outputs={"h": np.array([1.5], dtype=np.float16)})
    rendered = response_render(half, pb.ModelInferRequest(), raw=False)  # FP16: raw only
    assert np.frombuffer(rendered.raw_output_contents[0], dtype="<f2").tolist() == [1.5]


def test_the_priority_parameter_is_read_whatever_its_type() -> None:
    request = raw_request()
    assert priority_parameter(request) is None
    request.parameters["priority"].uint64_param = 1  # what tritonclient.grpc sends
    assert priority_parameter(request) == 1
    request.parameters["priority"].string_param = "low"
    assert priority_parameter(request) == "low"
    request.parameters["priority"].bool_param = True  # the data plane refuses it (400)
    assert priority_parameter(request) is True
