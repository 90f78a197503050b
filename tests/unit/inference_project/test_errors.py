"""An unreachable database is a 503 with Retry-After in the one error shape, never a 500: the
registry's REST API (DRF's exception handler) and every other Django page (handler500)."""

import pytest
from django.test import Client

from tests.conftest import database_unreachable

pytestmark = pytest.mark.django_db(transaction=True)


def assert_unavailable(response: object) -> None:
    from django.http import HttpResponse

    assert isinstance(response, HttpResponse)
    assert response.status_code == 503, response.content
    assert response.headers["Retry-After"] == "1"
    body = response.json()  # type: ignore[attr-defined]  # the test client's JSON helper
    assert body["error"]["code"] == "unavailable"
    assert "database" in body["error"]["message"]


def test_registry_writes_and_reads_answer_503_while_the_database_is_unreachable() -> None:
    client = Client()
    with database_unreachable():
        # Token authentication is the first query: it fails before anything is stored.
        write = client.post("/api/v1/models/digits/versions", HTTP_AUTHORIZATION="Token " + "0" * 40)
        read = client.get("/api/v1/models", HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert_unavailable(write)
    assert_unavailable(read)


def test_other_pages_answer_503_too() -> None:
    # The admin reads the session from the database in its middleware, outside DRF.
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "an-old-session"
    with database_unreachable():
        response = client.get("/admin/")
    assert_unavailable(response)
