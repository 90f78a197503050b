"""Logging filters."""

import logging

# Answers the platform gives on purpose (not ready, overloaded, timed out) are not server errors.
EXPECTED_STATUSES = {503, 504}


class SkipExpectedUnavailable(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "status_code", None) not in EXPECTED_STATUSES
