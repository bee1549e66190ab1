"""Log output: plain lines, or one JSON object per line (``LOG_FORMAT=json``), with the request id."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from livefeed.request_id import current_request_id

PROBE_PATHS = ("/healthz", "/readyz", "/metrics")


class RequestIdFilter(logging.Filter):
    """Add ``request_id`` (the current request's id, or "-") to every record.

    ``django.request`` logs a 4xx/5xx answer after the middleware has returned, with the
    request in ``extra``: its id is read from there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            from_request = getattr(getattr(record, "request", None), "request_id", None)
            record.request_id = from_request or current_request_id() or "-"
        return True


class ProbeAccessFilter(logging.Filter):
    """Drop the access-log lines of health checks and scrapes (``django.channels.server``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        path = getattr(record, "path", None)
        if path is None and isinstance(record.args, dict):
            path = record.args.get("path")
        return path not in PROBE_PATHS


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON: time, level, logger, message, request_id, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id and request_id != "-":
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
