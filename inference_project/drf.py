"""DRF integration: errors in the platform's `{"error": {"code", "message", "field"?}}` shape."""

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


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
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    if response.status_code == status.HTTP_400_BAD_REQUEST and isinstance(response.data, dict):
        body["details"] = response.data
    response.data = {"error": body}
    return response
