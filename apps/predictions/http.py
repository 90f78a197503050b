"""Small HTTP helpers for the async API views: JSON in and out, and protocol error rendering."""

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from redis.exceptions import RedisError

from apps.predictions.errors import ApiError, bad_request
from apps.predictions.observability import request_failed


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes", field="body")


def raw_body(request: HttpRequest) -> bytes:
    """The body's bytes, or 413 past INFERENCE_MAX_BODY_BYTES."""
    limit = settings.INFERENCE_MAX_BODY_BYTES
    if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
        raise too_large(limit)
    try:
        body = request.body
    except RequestDataTooBig:
        raise too_large(limit) from None
    if len(body) > limit:
        raise too_large(limit)
    return body


def json_body(request: HttpRequest) -> Any:
    """The parsed JSON body, or 413/400 naming the body as the field at fault.

    Like TF Serving, the body is read as JSON whatever the Content-Type (plain `curl -d` works).
    """
    body = raw_body(request)
    if not body:
        raise bad_request("request body is empty", field="body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        # The stdlib parser also takes NaN/Infinity literals, so the validator can name the
        # tensor that holds them instead of rejecting the whole body.
        return json.loads(body)
    except (ValueError, RecursionError):
        raise bad_request("request body is not valid JSON", field="body") from None


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", field="body")
    return body


ViewFunc = Callable[..., Awaitable[HttpResponse]]


def api_errors(render: str) -> Callable[[ViewFunc], ViewFunc]:
    """Render ApiError as `native` ({"error": {...}}) or `plain` ({"error": "..."}) JSON."""

    def decorate(view: ViewFunc) -> ViewFunc:
        @functools.wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> HttpResponse:
            try:
                return await view(*args, **kwargs)
            except (RedisError, OSError):
                exc = ApiError(
                    503, "unavailable", "Redis is unreachable; retry shortly", headers={"Retry-After": "1"}
                )
            except ApiError as error:
                exc = error
            request_failed(exc.code)
            return exc.native_response() if render == "native" else exc.plain_response()

        return wrapper

    return decorate


TIMEOUT_HEADER = "X-Request-Timeout"


def request_timeout(request: HttpRequest) -> float:
    """Seconds this client will wait: `X-Request-Timeout`, capped at `INFERENCE_SYNC_TIMEOUT_S`."""
    limit = settings.INFERENCE_SYNC_TIMEOUT_S
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return limit
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise bad_request("must be a positive number of seconds", field=TIMEOUT_HEADER)
    return min(value, limit)


IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX = 255


def idempotency_key(request: HttpRequest) -> str | None:
    """The client's `Idempotency-Key`: a retry with the same key gets the same answer."""
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not 0 < len(value) <= IDEMPOTENCY_KEY_MAX or not value.isprintable() or not value.isascii():
        raise bad_request(
            f"must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters", field=IDEMPOTENCY_HEADER
        )
    return value
