"""Errors the API answers with, rendered in each protocol's own form."""

from django.http import JsonResponse


class ApiError(Exception):
    """A client-facing error: HTTP status, a stable code, a message and the field at fault."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def native_response(self) -> JsonResponse:
        """`{"error": {"code", "message", "field"?}}`, the platform's own format."""
        body: dict[str, str] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return JsonResponse({"error": body}, status=self.status, headers=self.headers)

    def plain_response(self) -> JsonResponse:
        """`{"error": "<message>"}`, what TF Serving and Open Inference Protocol clients parse."""
        message = f"{self.field}: {self.message}" if self.field else self.message
        return JsonResponse({"error": message}, status=self.status, headers=self.headers)


def bad_request(message: str, *, field: str | None = None, code: str = "invalid_input") -> ApiError:
    return ApiError(400, code, message, field=field)


def not_found(message: str, *, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", message, field=field)
