"""The Open Inference Protocol (KServe v2) over gRPC: `inference.GRPCInferenceService`.

    ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer
    (apps/predictions/transports/oip/grpc_predict_v2.proto), plus grpc.health.v1 and reflection

One more adapter over the data plane, in the API process itself: the server runs on the same
event loop as the ASGI application (started and stopped by its lifespan, `grpc_lifespan`), so a
gRPC request shares the REST requests' batches, result subscription, admission and metrics.

- Metadata carries what REST's headers do: `authorization: Bearer <key>`, `idempotency-key`,
  `x-routing-key`; the call's deadline becomes the request's (capped as for REST).
- Tensors come as `raw_input_contents` (what tritonclient sends) or typed `contents`; the answer
  uses the same form as the request.
- The data plane's `ApiError` becomes the call's status (`STATUS_CODES`), its message naming the
  field; a 429/503 also carries `retry-after` (seconds) in the trailing metadata.
- Each call is counted and logged like a REST request, with the RPC's name as the route and the
  HTTP status its status code stands for.
- GRPC_MAX_MESSAGE_BYTES bounds a request and an answer (INFERENCE_MAX_BODY_BYTES by default);
  grpcio answers a larger one RESOURCE_EXHAUSTED before any of it reaches this code.
"""

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from django.conf import settings
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from apps.predictions import dataplane
from apps.predictions.errors import ApiError, bad_request
from apps.predictions.observability import request_closed, request_failed, request_opened
from apps.predictions.selectors import ServedModel
from apps.predictions.transports.oip import grpc_predict_v2_pb2 as pb
from apps.predictions.transports.v2 import binary_bytes, metadata_render
from apps.predictions.types import InferenceRequest, InferenceResponse, RequestContext
from apps.predictions.validation import shape_check, tensor_check
from inference_common.wire import NUMPY_TO_V2, V2_TO_NUMPY, bytes_array

logger = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"

# The data plane's HTTP status -> the gRPC status code clients of the protocol expect.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

CLIENT_CLOSED = 499  # what the metrics count a call the client cancelled as (nginx's code)

# The repeated field of InferTensorContents that holds each datatype.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

Reply = TypeVar("Reply")
Context = grpc.aio.ServicerContext[Any, Any]


def _metadata(context: Context) -> dict[str, str]:
    return {
        key: value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)  # "-bin" keys carry bytes: none of ours
    }


def priority_parameter(request: pb.ModelInferRequest) -> object | None:
    """The request's `parameters["priority"]` value, whichever type it came as (Triton's
    clients send a uint64_param); None without one."""
    if "priority" not in request.parameters:
        return None
    parameter = request.parameters["priority"]
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


def request_context_of(context: Context) -> RequestContext:
    """What REST reads from headers, from the call's metadata and deadline."""
    metadata = _metadata(context)
    # grpcio's asyncio context answers None for a call without a deadline.
    remaining: float | None = context.time_remaining()
    return RequestContext(
        authorization=metadata.get("authorization", ""),
        timeout_s=remaining if remaining is not None and remaining > 0 else None,
        idempotency_key=metadata.get("idempotency-key"),
        routing_key=metadata.get("x-routing-key"),
        priority=metadata.get("x-priority"),
    )


async def _call(context: Context, rpc: str, request: object, handle: Callable[[], Awaitable[Reply]]) -> Reply:
    """Run one RPC: counted and logged as a request; an ApiError aborts the call with its status.
    `request` None: its bytes were not a message of the RPC's type (`_lenient`)."""
    metadata = _metadata(context)
    info = request_opened(
        route=f"grpc/{rpc}", method="POST", client_request_id=metadata.get("x-request-id", "")
    )
    status = 500
    try:
        if request is None:
            raise bad_request(f"the request is not a valid {rpc}Request message", field="message")
        reply = await handle()
        status = 200
        return reply
    except ApiError as error:
        status = error.status
        request_failed(error.code)
        message = f"{error.field}: {error.message}" if error.field else error.message
        retry_after = error.headers.get("Retry-After")
        if retry_after is not None:
            context.set_trailing_metadata((("retry-after", retry_after),))
        await context.abort(STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL), message)
        raise  # abort() raises; for the type checker
    except asyncio.CancelledError:  # the client cancelled or went away
        status = CLIENT_CLOSED
        raise
    except Exception:
        logger.exception("unhandled error in %s", rpc)
        request_failed("internal_error")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; it has been logged")
        raise
    finally:
        request_closed(info, status)


async def _model_version(
    request: pb.ModelReadyRequest | pb.ModelMetadataRequest, context: Context
) -> int | None:
    """Authenticate a model RPC's caller; the version it names (None: the routed one)."""
    await dataplane.authenticate(request_context_of(context))
    return _version(request.version, field="version")


def _version(raw: str, *, field: str) -> int | None:
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise bad_request(f"version must be a positive integer, not {raw!r}", field=field)
    return int(raw)


def _input(
    tensor: pb.ModelInferRequest.InferInputTensor,
    *,
    index: int,
    specs: dict[str, dict[str, Any]],
    raw: bytes | None,
) -> tuple[str, np.ndarray]:
    name = tensor.name
    if name not in specs:
        raise bad_request(
            f"unknown input {name!r}; the model takes {sorted(specs)}", field=f"inputs[{index}].name"
        )
    spec, field = specs[name], f"inputs.{name}"
    if tensor.datatype != spec["datatype"]:
        raise bad_request(
            f"datatype {tensor.datatype!r} does not match the model's {spec['datatype']}",
            field=f"{field}.datatype",
        )
    shape = list(tensor.shape)
    if any(d < 0 for d in shape):
        raise bad_request("shape must be non-negative integers", field=f"{field}.shape")
    datatype = spec["datatype"]
    if raw is not None:
        if tensor.HasField("contents"):
            raise bad_request("contents and raw_input_contents are exclusive", field=f"{field}.contents")
        return name, _raw_tensor(raw, shape, spec, field=field, index=index)
    if datatype not in CONTENTS_FIELD:
        raise bad_request(f"{datatype} travels only as raw_input_contents", field=f"{field}.contents")
    values = getattr(tensor.contents, CONTENTS_FIELD[datatype])
    if len(values) != math.prod(shape):
        raise bad_request(
            f"contents has {len(values)} elements but shape {shape} needs {math.prod(shape)}",
            field=f"{field}.contents",
        )
    if datatype == "BYTES":
        return name, shape_check(bytes_array(list(values), shape), spec=spec, field=f"{field}.contents")
    array = np.array(values, dtype=V2_TO_NUMPY[datatype]).reshape(shape)
    return name, tensor_check(array, spec=spec, field=f"{field}.contents")


def _raw_tensor(raw: bytes, shape: list[int], spec: dict[str, Any], *, field: str, index: int) -> np.ndarray:
    """One entry of raw_input_contents: little-endian elements (BYTES: length-prefixed)."""
    where = f"{field}.raw_input_contents"
    if spec["datatype"] == "BYTES":
        try:
            array = binary_bytes(raw, shape, field=field)
        except ApiError as error:
            raise bad_request(error.message, field=where) from None
        return shape_check(array, spec=spec, field=where)
    dtype = np.dtype(V2_TO_NUMPY[spec["datatype"]]).newbyteorder("<")
    needed = math.prod(shape) * dtype.itemsize
    if len(raw) != needed:
        raise bad_request(
            f"raw_input_contents[{index}] holds {len(raw)} bytes; shape {shape} of {spec['datatype']} "
            f"needs {needed}",
            field=where,
        )
    return tensor_check(np.frombuffer(raw, dtype=dtype).reshape(shape), spec=spec, field=where)


def inputs_decode(request: pb.ModelInferRequest, served: ServedModel) -> dict[str, np.ndarray]:
    """Inputs by name, checked against the served signature (and the outputs asked for)."""
    if not request.inputs:
        raise bad_request("inputs must be a non-empty list of tensors", field="inputs")
    raws: list[bytes | None] = list(request.raw_input_contents)
    if raws and len(raws) != len(request.inputs):
        raise bad_request(
            f"{len(raws)} raw_input_contents for {len(request.inputs)} inputs", field="raw_input_contents"
        )
    if not raws:
        raws = [None] * len(request.inputs)
    specs = {spec["name"]: spec for spec in served.signature["inputs"]}
    inputs = dict(
        _input(tensor, index=i, specs=specs, raw=raw)
        for i, (tensor, raw) in enumerate(zip(request.inputs, raws, strict=True))
    )
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise bad_request(f"missing inputs {missing}", field="inputs")
    if len({len(a) for a in inputs.values()}) != 1:
        raise bad_request("all inputs must have the same batch size", field="inputs")
    known = {spec["name"] for spec in served.signature["outputs"]}
    unknown = sorted(o.name for o in request.outputs if o.name not in known)
    if unknown:
        raise bad_request(f"unknown outputs {unknown}; the model has {sorted(known)}", field="outputs")
    return inputs


def _raw(array: np.ndarray) -> bytes:
    if array.dtype == object:  # BYTES: each element's 4-byte little-endian length, then it
        return b"".join(len(item).to_bytes(4, "little") + bytes(item) for item in array.reshape(-1))
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def response_render(
    response: InferenceResponse, request: pb.ModelInferRequest, *, raw: bool
) -> pb.ModelInferResponse:
    """The outputs asked for (all when none named), raw or typed like the request's inputs."""
    wanted = {o.name for o in request.outputs} or None
    reply = pb.ModelInferResponse(
        model_name=response.model, model_version=str(response.version), id=request.id or response.id
    )
    for name, array in response.outputs.items():
        if wanted is not None and name not in wanted:
            continue
        datatype = NUMPY_TO_V2[array.dtype.name]
        tensor = reply.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            reply.raw_output_contents.append(_raw(array))
        elif datatype in CONTENTS_FIELD:
            values = array.reshape(-1)
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(
                list(values) if datatype == "BYTES" else values.tolist()
            )
        else:  # FP16 has no typed field: raw for every output then
            return response_render(response, request, raw=True)
    return reply


class InferenceServicer:
    """The six RPCs; registered by `_handlers` (a request that does not parse reaches them as
    None and is answered INVALID_ARGUMENT, where grpcio's own parsing answers UNKNOWN)."""

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        async def handle() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await _call(context, "ServerLive", request, handle)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        async def handle() -> pb.ServerReadyResponse:
            ready, _ = await dataplane.server_ready()
            return pb.ServerReadyResponse(ready=ready)

        return await _call(context, "ServerReady", request, handle)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        async def handle() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(name="keras-inference-platform", version="1.0", extensions=[])

        return await _call(context, "ServerMetadata", request, handle)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        async def handle() -> pb.ModelReadyResponse:
            _, ready = await dataplane.model_ready(request.name, await _model_version(request, context))
            return pb.ModelReadyResponse(ready=ready)

        return await _call(context, "ModelReady", request, handle)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        async def handle() -> pb.ModelMetadataResponse:
            metadata = await dataplane.model_metadata(request.name, await _model_version(request, context))
            rendered = metadata_render(metadata.served, metadata.versions)
            return pb.ModelMetadataResponse(
                name=rendered["name"],
                versions=rendered["versions"],
                platform=rendered["platform"],
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in rendered["inputs"]],
                outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in rendered["outputs"]],
            )

        return await _call(context, "ModelMetadata", request, handle)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        async def handle() -> pb.ModelInferResponse:
            caller = await dataplane.authenticate(request_context_of(context))
            priority = priority_parameter(request)
            if priority is not None:
                caller = dataplane.prioritized(caller, priority, field="parameters.priority")
            version = _version(request.model_version, field="model_version")
            inference = InferenceRequest(
                model=request.model_name,
                version=version,
                inputs=lambda served: inputs_decode(request, served),
            )
            response = await dataplane.infer(inference, caller)
            context.set_trailing_metadata((("x-request-id", response.id),))
            return response_render(response, request, raw=bool(request.raw_input_contents))

        return await _call(context, "ModelInfer", request, handle)


# Each RPC's request and response types.
RPCS: dict[str, tuple[type[Message], type[Message]]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
}


def _lenient(message_type: type[Message]) -> Callable[[bytes], Message | None]:
    def parse(data: bytes) -> Message | None:
        try:
            return message_type.FromString(data)
        except DecodeError:
            return None

    return parse


def _handlers(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            name: grpc.unary_unary_rpc_method_handler(
                getattr(servicer, name),
                request_deserializer=_lenient(request),
                response_serializer=response.SerializeToString,
            )
            for name, (request, response) in RPCS.items()
        },
    )


def grpc_server_build() -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """The server with the inference service, health checking and reflection, bound to
    GRPC_HOST:GRPC_PORT: (server, bound port, its health servicer)."""
    limit = settings.GRPC_MAX_MESSAGE_BYTES
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # Several API processes on one host (API_WORKERS > 1) share the port.
            ("grpc.so_reuseport", 1 if settings.GRPC_REUSE_PORT else 0),
        ]
    )
    server.add_generic_rpc_handlers((_handlers(InferenceServicer()),))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(f"{settings.GRPC_HOST}:{settings.GRPC_PORT}")
    return server, port, health


async def grpc_server_start() -> tuple[grpc.aio.Server, health_aio.HealthServicer]:
    server, port, health = grpc_server_build()
    await server.start()
    for service in ("", SERVICE):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    logger.info("gRPC (Open Inference Protocol) on %s:%d", settings.GRPC_HOST, port)
    return server, health


ASGIApp = Callable[
    [dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]
]


def grpc_lifespan(app: ASGIApp) -> ASGIApp:
    """`app` with an ASGI lifespan that serves gRPC beside it while the server runs (GRPC_PORT
    0: no gRPC). The server's health status goes NOT_SERVING at shutdown, and calls in flight get
    GRPC_GRACE_S to finish."""

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        started: tuple[grpc.aio.Server, health_aio.HealthServicer] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if settings.GRPC_PORT:
                        started = await grpc_server_start()
                except Exception as exc:
                    logger.exception("the gRPC server did not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return None
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if started is not None:
                    server, health = started
                    await health.enter_graceful_shutdown()
                    await server.stop(settings.GRPC_GRACE_S)
                await send({"type": "lifespan.shutdown.complete"})
                return None

    return application
