"""What the ASGI fast path records per request (apps/predictions/observability.py): metrics and a
log line. The JSON formatter of those lines: tests/unit/inference_project/test_logs.py."""

import asyncio
import logging

import httpx
import pytest
from prometheus_client import REGISTRY
from pytest_django import Settings

from inference_project.asgi import application  # sets up logging once, before caplog's handler


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_fast_path_counts_and_logs_each_request(caplog: pytest.LogCaptureFixture, settings: Settings) -> None:
    async def calls() -> httpx.Response:
        # FastPath takes the scope as a dict; httpx's ASGI callable type says MutableMapping.
        transport = httpx.ASGITransport(app=application)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (await client.get("/healthz")).status_code == 200
            return await client.post(
                "/api/v1/predictions", content=b"x" * 500, headers={"X-Request-ID": "trace-1"}
            )

    settings.INFERENCE_MAX_BODY_BYTES = 100
    before_ok = sample("inference_requests_total", model="", version="", route="healthz", status="200")
    labels = {"model": "", "route": "api/v1/predictions", "code": "payload_too_large"}
    before_413 = sample("inference_errors_total", **labels)
    with caplog.at_level(logging.INFO, logger="inference.access"):
        response = asyncio.run(calls())
    assert response.status_code == 413
    assert (
        sample("inference_requests_total", model="", version="", route="healthz", status="200")
        == before_ok + 1
    )
    assert sample("inference_errors_total", **labels) == before_413 + 1
    assert sample("inference_requests_in_flight", route="api/v1/predictions") == 0
    (line,) = [r for r in caplog.records if r.name == "inference.access"]
    fields = vars(line)  # the log call's extra= fields are attributes of the record
    assert (fields["status"], fields["route"], fields["error_code"], fields["client_request_id"]) == (
        413,
        "api/v1/predictions",
        "payload_too_large",
        "trace-1",
    )
