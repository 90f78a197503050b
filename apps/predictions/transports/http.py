"""What the REST adapters share: JSON in and out, the request context from HTTP headers, and
the two forms an `ApiError` takes over HTTP."""

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import View

from apps.predictions.errors import ApiError, bad_request
from apps.predictions.fastpath import body_get
from apps.predictions.observability import request_failed
from apps.predictions.types import RequestContext
from inference_project.errors import error_response

TIMEOUT_HEADER = "X-Request-Timeout"
PRIORITY_HEADER = "X-Priority"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ROUTING_KEY_HEADER = "X-Routing-Key"


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def json_body(request: HttpRequest) -> Any:
    """The parsed JSON body, or 413/400 naming the body as the field at fault.

    Like TF Serving, the body is read as JSON whatever the Content-Type (plain `curl -d` works).
    """
    body = body_get(request)
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


def request_context(request: HttpRequest) -> RequestContext:
    """The headers the data plane reads: Authorization, X-Request-Timeout, Idempotency-Key,
    X-Routing-Key, X-Priority."""
    return RequestContext(
        authorization=request.headers.get("Authorization", ""),
        timeout_s=_timeout(request.headers.get(TIMEOUT_HEADER)),
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
        routing_key=request.headers.get(ROUTING_KEY_HEADER),
        priority=request.headers.get(PRIORITY_HEADER),
    )


def _timeout(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise bad_request("must be a positive number of seconds", field=TIMEOUT_HEADER)
    return value


def native_error(error: ApiError) -> JsonResponse:
    """`{"error": {"code", "message", "field"?}}`, the platform's own form."""
    return error_response(error.status, error.code, error.message, field=error.field, headers=error.headers)


def plain_error(error: ApiError) -> JsonResponse:
    """`{"error": "<message>"}`, what TF Serving and Open Inference Protocol clients parse."""
    message = f"{error.field}: {error.message}" if error.field else error.message
    return JsonResponse({"error": message}, status=error.status, headers=error.headers)


ViewFunc = Callable[..., Awaitable[HttpResponse]]


def renders_errors(form: Literal["native", "plain"]) -> Callable[[ViewFunc], ViewFunc]:
    """A view's `ApiError` becomes a response in `form`, its code recorded for the metrics.

    A body the fast path refused is answered 413 before the view runs, as before it was read:
    ahead of authentication (401) and of any parsing (400).
    """
    render = native_error if form == "native" else plain_error

    def decorate(view: ViewFunc) -> ViewFunc:
        @functools.wraps(view)
        async def wrapper(view_self: View, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                body_get(request)
                return await view(view_self, request, *args, **kwargs)
            except ApiError as error:
                request_failed(error.code)
                return render(error)

        return wrapper

    return decorate
