"""Project-wide error pages: JSON for API clients, Django's HTML pages for the admin."""

import sys
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views import defaults

from inference_project.errors import DATABASE_UNAVAILABLE, database_unavailable_response, error_response

ADMIN_PREFIX = "/admin/"

# Django calls handler400 and handler403 with the exception; only the 404 handler may get None.


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(ADMIN_PREFIX):
        return defaults.page_not_found(request, exception)
    return error_response(404, "not_found", f"no route {request.method} {request.path}")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith(ADMIN_PREFIX):
        return defaults.bad_request(request, exception)
    return error_response(400, "bad_request", "the request could not be understood")


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith(ADMIN_PREFIX):
        return defaults.permission_denied(request, exception)
    return error_response(403, "forbidden", "not allowed")


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    # Django calls this while it handles the exception, so it is still sys.exc_info()'s.
    if isinstance(sys.exc_info()[1], DATABASE_UNAVAILABLE):
        return database_unavailable_response()
    if request.path.startswith(ADMIN_PREFIX):
        return defaults.server_error(request)
    return error_response(500, "internal_error", "internal error; it has been logged")
