"""The data plane's one error type. Each transport adapter renders it in its protocol's form."""

RETRY_AFTER_S = "1"


class ApiError(Exception):
    """A client-facing error: HTTP status, a stable code, a message and the field at fault.

    The status is HTTP's; the gRPC adapter maps it to a status code. `headers` carries what the
    client needs to act on it (`Retry-After`, `WWW-Authenticate`).
    """

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


def bad_request(message: str, *, field: str | None = None, code: str = "invalid_input") -> ApiError:
    return ApiError(400, code, message, field=field)


def not_found(message: str, *, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", message, field=field)


def unavailable(
    message: str = "the queue is unreachable; retry shortly", code: str = "unavailable"
) -> ApiError:
    """503 with Retry-After: Redis or a worker cannot take the request now."""
    return ApiError(503, code, message, headers={"Retry-After": RETRY_AFTER_S})
