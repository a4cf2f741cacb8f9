"""Structured logs: one JSON object per line on stderr, in hclog's shape.

go-plugin parses each stderr line of the plugin as JSON with string `@level`,
`@message` and `@timestamp` (exactly six fractional digits), and shows the other keys
as key=value pairs in Grafana's log. The broker and workers use the same shape so one
reader handles every process. Pass fields with `log.info("msg", extra={"fields": {...}})`.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "error"}


class HclogJsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "@level": _LEVELS.get(record.levelname, "info"),
            "@message": record.getMessage(),
            "@timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"),
            "@module": record.name,
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(HclogJsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: `log.info("started", extra=fields(channel=path))`."""
    return {"fields": values}
