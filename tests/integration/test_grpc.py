"""The Open Inference Protocol over gRPC on the running platform (GRPC_PORT): Triton's own client
unchanged, typed contents through the protocol's stubs, errors as status codes, malformed
messages, health checking and reflection, and a fuzz of generated requests."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.predictions.transports.oip import grpc_predict_v2_pb2 as pb
from apps.predictions.transports.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.conftest import CACHE, ROOT, Heldout
from tests.integration.conftest import Platform

pytestmark = pytest.mark.integration
INFER = "/inference.GRPCInferenceService/ModelInfer"
# KServe's client pins psutil<6 (the platform runs 7.x): it gets a virtualenv of its own.
KSERVE = "kserve==0.21.0"
KSERVE_VENV = CACHE / "venv-kserve"


def target(platform: Platform) -> str:
    return f"127.0.0.1:{platform.env['GRPC_PORT']}"


def bearer(platform: Platform) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {platform.token}"),)


@pytest.fixture(scope="module")
def channel(platform: Platform) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(target(platform)) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


def accuracy(scores: np.ndarray, labels: list[int]) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == np.array(labels)))


def client_run(
    python: Path | str, script: str, platform: Platform, rows: list[list[float]], folder: Path
) -> Any:
    """A client script of tests/integration/ (a process of its own) against the platform; its
    JSON summary."""
    (folder / "rows.json").write_text(json.dumps(rows))
    done = subprocess.run(
        [
            str(python),
            str(ROOT / "tests" / "integration" / script),
            target(platform),
            platform.token,
            str(folder / "rows.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tritonclient_grpc_works_unchanged(platform: Platform, heldout: Heldout, tmp_path: Path) -> None:
    """tritonclient.grpc: raw binary contents (its default), metadata, readiness, a pinned
    version, the 360 held-out digits in batches of 40 at >= 0.9 accuracy, a wrong key refused."""
    rows, labels = heldout
    summary = client_run(sys.executable, "triton_grpc_client.py", platform, rows, tmp_path)
    assert summary["server_live"] and summary["server_ready"]
    assert summary["model_ready"] and summary["model_ready_v1"]
    metadata = summary["metadata"]
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert metadata["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": ["-1", "10"]}]
    assert "1" in metadata["versions"] and summary["server_name"]
    assert summary["ids"] == [f"triton-grpc-{start}" for start in range(0, len(rows), 40)]
    assert summary["versions"] == ["1"]
    assert np.mean(np.array(summary["top1"]) == np.array(labels)) >= 0.9
    assert summary["wrong_key"] == "StatusCode.UNAUTHENTICATED"
    status, message = summary["bad_priority"]
    assert status == "StatusCode.INVALID_ARGUMENT" and "parameters.priority" in message


@pytest.fixture(scope="module")
def kserve_python() -> Path:
    python = KSERVE_VENV / "bin" / "python"
    stamp = KSERVE_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != KSERVE:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(KSERVE_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", KSERVE],
            check=True,
            capture_output=True,
            timeout=900,
        )
        stamp.write_text(KSERVE)
    return python


def test_kserve_inference_grpc_client_works_unchanged(
    platform: Platform, heldout: Heldout, kserve_python: Path, tmp_path: Path
) -> None:
    """kserve.InferenceGRPCClient: readiness, raw and typed contents, a pinned version, the 360
    held-out digits at >= 0.9 accuracy, and a wrong key refused."""
    rows, labels = heldout
    summary = client_run(kserve_python, "kserve_grpc_client.py", platform, rows, tmp_path)
    assert summary["server_ready"] is True and summary["model_ready"] is True
    for form in ("raw", "typed"):
        answer = summary[form]
        assert answer["id"] == f"kserve-{form == 'raw'}" and answer["model_version"] == "1"
        assert answer["name"] == "scores"
        assert np.mean(np.array(answer["top1"]) == np.array(labels)) >= 0.9
    assert summary["wrong_key"] == "StatusCode.UNAUTHENTICATED"


def test_typed_contents_and_the_answer_in_the_same_form(
    stub: pb_grpc.GRPCInferenceServiceStub, platform: Platform, heldout: Heldout
) -> None:
    rows, labels = heldout
    request = pb.ModelInferRequest(model_name="digits", id="typed-1")
    tensor = request.inputs.add(name="pixels", datatype="FP32", shape=[len(rows), 64])
    tensor.contents.fp32_contents.extend(np.array(rows, dtype=np.float32).reshape(-1).tolist())
    reply, call = stub.ModelInfer.with_call(request, metadata=bearer(platform), timeout=30)
    assert reply.id == "typed-1" and reply.model_name == "digits"
    assert not reply.raw_output_contents
    (output,) = reply.outputs
    assert output.name == "scores" and output.datatype == "FP32" and list(output.shape) == [len(rows), 10]
    scores = np.array(output.contents.fp32_contents, dtype=np.float32).reshape(len(rows), 10)
    assert accuracy(scores, labels) >= 0.9
    assert dict(call.trailing_metadata())["x-request-id"]


def code_of(call: grpc.RpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = call.code()
    return code


def raw_request(
    rows: int = 1, *, name: str = "pixels", datatype: str = "FP32", width: int = 64
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name=name, datatype=datatype, shape=[rows, width])
    request.raw_input_contents.append(np.zeros((rows, width), dtype=np.float32).tobytes())
    return request


@pytest.mark.parametrize(
    ("change", "code", "detail"),
    [
        ({"name": "image"}, grpc.StatusCode.INVALID_ARGUMENT, "inputs[0].name"),
        ({"datatype": "INT32"}, grpc.StatusCode.INVALID_ARGUMENT, "inputs.pixels.datatype"),
        ({"width": 63}, grpc.StatusCode.INVALID_ARGUMENT, "inputs.pixels.raw_input_contents"),
    ],
)
def test_bad_tensors_are_invalid_argument_naming_the_tensor(
    stub: pb_grpc.GRPCInferenceServiceStub,
    platform: Platform,
    change: dict[str, object],
    code: grpc.StatusCode,
    detail: str,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(raw_request(**change), metadata=bearer(platform), timeout=10)  # type: ignore[arg-type]
    assert code_of(raised.value) == code
    assert detail in (raised.value.details() or "")


def test_errors_are_status_codes(stub: pb_grpc.GRPCInferenceServiceStub, platform: Platform) -> None:
    cases = [
        (raw_request(), [], grpc.StatusCode.UNAUTHENTICATED),
        (raw_request(), [("authorization", "Bearer not-a-key")], grpc.StatusCode.UNAUTHENTICATED),
        (
            pb.ModelInferRequest(model_name="nope", inputs=raw_request().inputs),
            bearer(platform),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            pb.ModelInferRequest(
                model_name="digits",
                model_version="99",
                inputs=raw_request().inputs,
                raw_input_contents=raw_request().raw_input_contents,
            ),
            bearer(platform),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            pb.ModelInferRequest(model_name="digits", model_version="one"),
            bearer(platform),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (pb.ModelInferRequest(model_name="digits"), bearer(platform), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for request, metadata, code in cases:
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(request, metadata=metadata, timeout=10)
        assert code_of(raised.value) == code, (request, raised.value.details())
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"), timeout=10)
    assert code_of(raised.value) == grpc.StatusCode.UNAUTHENTICATED


def test_a_message_over_the_limit_and_malformed_bytes_never_hurt_the_server(
    channel: grpc.Channel, stub: pb_grpc.GRPCInferenceServiceStub, platform: Platform, heldout: Heldout
) -> None:
    raw = channel.unary_unary(INFER, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    for garbage in (b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", bytes(range(256))):
        with pytest.raises(grpc.RpcError) as raised:
            raw(garbage, metadata=bearer(platform), timeout=10)
        assert code_of(raised.value) == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid ModelInferRequest" in (raised.value.details() or "")
    too_big = raw_request()
    too_big.raw_input_contents[0] = b"\0" * (int(platform.env.get("GRPC_MAX_MESSAGE_BYTES", 8 << 20)) + 1)
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(too_big, metadata=bearer(platform), timeout=30)
    assert code_of(raised.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Still serving.
    request = raw_request()
    request.raw_input_contents[0] = np.array(heldout[0][:1], dtype=np.float32).tobytes()
    assert stub.ModelInfer(request, metadata=bearer(platform), timeout=30).outputs[0].name == "scores"


def test_health_checking_and_reflection(channel: grpc.Channel) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' types leave its methods out
    for service in ("", "inference.GRPCInferenceService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(
        reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    services = {s.name for s in replies[0].list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services


def test_grpc_requests_are_counted_like_rest_ones(
    stub: pb_grpc.GRPCInferenceServiceStub, platform: Platform, heldout: Heldout
) -> None:
    request = raw_request()
    request.raw_input_contents[0] = np.array(heldout[0][:1], dtype=np.float32).tobytes()
    stub.ModelInfer(request, metadata=bearer(platform), timeout=30)
    with platform.client() as client:
        metrics = client.get("/metrics").text
    assert 'route="grpc/ModelInfer",status="200"' in metrics
    assert '"route": "grpc/ModelInfer"' in platform.log() or '"route":"grpc/ModelInfer"' in platform.log()


DATATYPES = ["FP32", "FP64", "INT32", "INT64", "UINT8", "BOOL", "BYTES", "FP16", ""]


GENERATED = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["pixels", "", "x" * 300, "pixels\x00"]),
        "datatype": st.sampled_from(DATATYPES),
        "shape": st.lists(st.integers(min_value=-3, max_value=70), max_size=4),
        "raw": st.one_of(st.none(), st.binary(max_size=600)),
        "floats": st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=140),
        "version": st.sampled_from(["", "1", "0", "-1", "abc", "99999999999999999999"]),
        "outputs": st.lists(st.sampled_from(["scores", "nope", ""]), max_size=2),
    }
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=GENERATED)
def test_generated_requests_get_a_status_never_a_crash(
    stub: pb_grpc.GRPCInferenceServiceStub, platform: Platform, case: dict[str, Any]
) -> None:
    request = pb.ModelInferRequest(model_name="digits", model_version=case["version"])
    tensor = request.inputs.add(name=case["name"], datatype=case["datatype"], shape=case["shape"])
    if case["raw"] is None:
        tensor.contents.fp32_contents.extend(case["floats"])
    else:
        request.raw_input_contents.append(case["raw"])
    for output in case["outputs"]:
        request.outputs.add(name=output)
    try:
        reply = stub.ModelInfer(request, metadata=bearer(platform), timeout=10)
    except grpc.RpcError as error:
        assert code_of(error) in {
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        }, (code_of(error), error.details())
        return
    assert reply.outputs and reply.model_name == "digits"
