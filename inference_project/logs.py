"""JSON logs: one object a line, ready for Filebeat/Logstash and Elasticsearch.

Every line has `timestamp` (UTC, ISO 8601), `level`, `logger`, `message`, `service` (api,
worker, platform-worker: from INFERENCE_SERVICE) and `pid`; whatever a call passes in `extra=`
(request_id, model, version, status, latency_ms, worker, ...) becomes a top-level field. The
fields are mapped in deploy/elk/index-template.json.
"""

import logging
import os
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra=` (but uvicorn's
# ANSI-coloured copy of the message).
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
_RECORD_FIELDS |= {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, *args: Any, service: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service = service or os.environ.get("INFERENCE_SERVICE", "inference")

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()
