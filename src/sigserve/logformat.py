"""The server's own log: human-readable lines (the default) or, with `--log_format=json`, one JSON
object per line for log pipelines (Loki, Elasticsearch, Cloud Logging, `jq`).

Each JSON line has `time` (RFC 3339, UTC, microseconds), `level`, `logger`, `message`, and where known
`model`, `version` and `request_id`, plus `exception` (the traceback text) when one is logged. Those
three fields come from `log_context(...)`, which the code that knows them wraps around its work
(the manager around loading a version, the front ends around a request), or from `extra=` on a
single call. Importable from every layer, like `errors.py`.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import sys
from collections.abc import Iterator
from typing import Any

import orjson

TEXT = "text"
JSON = "json"
FORMATS = (TEXT, JSON)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_FIELDS = ("model", "version", "request_id")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("sigserve_log", default=None)
_format = TEXT


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `model=`, `version=`, `request_id=` to every record logged inside the block (this thread
    or asyncio task only). None values are left out."""
    current = _context.get()
    merged = dict(current) if current else {}
    merged.update((k, v) for k, v in fields.items() if v is not None)
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; never raises on odd values (they are written as text)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _context.get()
        for field in _FIELDS:
            value = getattr(record, field, None)
            if value is None and context:
                value = context.get(field)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode("utf-8")


def configure(log_format: str = TEXT, level: int = logging.INFO) -> None:
    """Send the root logger to stderr in `log_format` ("text" or "json"); replaces earlier handlers."""
    global _format
    if log_format not in FORMATS:
        from sigserve.errors import invalid_argument

        raise invalid_argument(f"--log_format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    _format = log_format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == JSON else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(log_format == JSON)


def is_json() -> bool:
    return _format == JSON


def say(line: str, logger_name: str = "sigserve.serve") -> None:
    """A line for people and scripts (TF Serving's start-up lines): printed as is, or in JSON mode
    logged at INFO, so that the line's text stays greppable and the output stays one JSON per line."""
    if _format == JSON:
        logging.getLogger(logger_name).info("%s", line)
    else:
        print(line, file=sys.stderr, flush=True)
