"""What the API records about each prediction request: Prometheus metrics and one JSON log line.

The ASGI fast path opens a `RequestInfo` for each request it routes; the views and services fill
in what they learn (model, version, request id, error code) and the fast path records it all once
the response is sent. The request id is the id the worker logs and stores the answer under, so
one id links the API's line and the worker's line of a request.
"""

import contextvars
import logging
import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

from inference_project.metrics import LATENCY_BUCKETS

logger = logging.getLogger("inference.access")

REQUESTS = Counter(
    "inference_requests_total",
    "Prediction API requests answered, by model, version, route and HTTP status.",
    ["model", "version", "route", "status"],
)
LATENCY = Histogram(
    "inference_request_duration_seconds",
    "Time from a request's arrival at the API to its response, by model and route.",
    ["model", "route"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "inference_requests_in_flight",
    "Requests the API is handling now, by route.",
    ["route"],
    multiprocess_mode="livesum",
)
ERRORS = Counter(
    "inference_errors_total",
    "Error answers, by model, route and the error code of the response body.",
    ["model", "route", "code"],
)

# Probes and scrapes are counted, not logged: a line each would drown the requests.
QUIET_ROUTES = {
    "healthz",
    "readyz",
    "metrics",
    "v2/health/live",
    "v2/health/ready",
    "grpc/ServerLive",
    "grpc/ServerReady",
}


@dataclass
class RequestInfo:
    route: str
    method: str
    started: float = field(default_factory=time.perf_counter)
    model: str = ""
    version: int | None = None
    request_id: str = ""
    error_code: str = ""
    client_request_id: str = ""


_current: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("request_info", default=None)


def request_info() -> RequestInfo | None:
    """The request being handled in this task, if the fast path routed it."""
    return _current.get()


def request_opened(*, route: str, method: str, client_request_id: str = "") -> RequestInfo:
    info = RequestInfo(route=route, method=method, client_request_id=client_request_id)
    _current.set(info)
    IN_FLIGHT.labels(route).inc()
    return info


def request_served(*, model: str, version: int) -> None:
    if info := _current.get():
        info.model, info.version = model, version


def request_identified(request_id: str) -> None:
    if info := _current.get():
        info.request_id = request_id


def request_failed(code: str) -> None:
    if info := _current.get():
        info.error_code = code


def request_closed(info: RequestInfo, status: int) -> None:
    elapsed = time.perf_counter() - info.started
    IN_FLIGHT.labels(info.route).dec()
    version = "" if info.version is None else str(info.version)
    REQUESTS.labels(info.model, version, info.route, str(status)).inc()
    LATENCY.labels(info.model, info.route).observe(elapsed)
    if status >= 400:
        ERRORS.labels(info.model, info.route, info.error_code or f"http_{status}").inc()
    if info.route in QUIET_ROUTES:
        return
    logger.info(
        "request",
        extra={
            "request_id": info.request_id,
            "client_request_id": info.client_request_id,
            "route": info.route,
            "method": info.method,
            "model": info.model,
            "version": info.version,
            "status": status,
            "error_code": info.error_code,
            "latency_ms": round(elapsed * 1000, 3),
        },
    )
