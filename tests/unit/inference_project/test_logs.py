"""JSON log lines (inference_project/logs.py)."""

import json
import logging
import sys

from inference_project.logs import JsonFormatter


def test_json_formatter_writes_one_object_with_the_extra_fields() -> None:
    record = logging.LogRecord("inference.access", logging.INFO, __file__, 1, "request %s", ("done",), None)
    record.request_id = "abc.123"
    record.latency_ms = 4.2
    line = JsonFormatter(service="api").format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "request done" and data["service"] == "api" and data["level"] == "INFO"
    assert (data["request_id"], data["latency_ms"]) == ("abc.123", 4.2)
    assert data["timestamp"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exception"]
