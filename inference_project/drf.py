"""DRF integration: errors in the platform's `{"error": {"code", "message", "field"?}}` shape."""

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from inference_project.errors import (
    DATABASE_RETRY_AFTER_S,
    DATABASE_UNAVAILABLE,
    DATABASE_UNAVAILABLE_MESSAGE,
    error_body,
)


def _first_message(detail: Any) -> tuple[str | None, str]:
    """The first (field, message) of DRF's nested error detail."""
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()))
        inner_field, message = _first_message(value)
        name = None if field == "non_field_errors" else str(field)
        return (f"{name}.{inner_field}" if name and inner_field else name or inner_field), message
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return None, str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DATABASE_UNAVAILABLE):
        # Registry writes (and reads) while the database restarts or is cut off: the client
        # retries; the services write in one transaction, so nothing was recorded half-way.
        return Response(
            error_body("unavailable", DATABASE_UNAVAILABLE_MESSAGE),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": DATABASE_RETRY_AFTER_S},
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=exc.messages)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(detail=str(exc))
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    field, message = _first_message(response.data)
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.APIException) and isinstance(exc.detail, exceptions.ErrorDetail):
        code = exc.detail.code or code
    details = response.data if response.status_code == status.HTTP_400_BAD_REQUEST else None
    extra = {"details": details} if isinstance(details, dict) else {}
    response.data = error_body(str(code), message, field=field, **extra)
    return response
