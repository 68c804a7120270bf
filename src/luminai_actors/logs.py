"""Structured logs: one JSON object per line, with the organization, agent, talk and message in play.

`log_context(talk_id=..., message_id=...)` puts ids in a context variable that every record made inside it
carries (actor threads and Dramatiq workers set it around each piece of work). Secrets never reach a log
line: values after `apikey`, `token`, `authorization`, `api_key` or `Bearer` are masked as a last line of
defence, and message bodies are never logged by this package. LUMINAI_LOG_FORMAT=text gives plain lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("luminai_log_context", default={})  # noqa: B039 - never mutated, replaced
_SECRET = re.compile(
    r"(?i)(apikey|api_key|api-key|token|authorization|password|secret)(\"?\s*[:=]\s*\"?|\s+)(bearer\s+)?[^\s\",}]+"
)
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-]+")


# Every match of the two patterns contains one of these words: a line without any of them (most lines, and
# every access-log line) skips the regular expressions.
_SECRET_WORDS = ("apikey", "api_key", "api-key", "token", "authorization", "password", "secret", "bearer")


def redact(text: str) -> str:
    lowered = text.lower()
    if not any(word in lowered for word in _SECRET_WORDS):
        return text
    return _BEARER.sub("Bearer ***", _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text))


@contextlib.contextmanager
def log_context(**ids: object) -> Iterator[None]:
    """Attach ids (organization_id, agent_id, talk_id, message_id, instance, ...) to records made inside."""
    merged = {**_context.get(), **{k: str(v) for k, v in ids.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.luminai = _context.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
            "thread": record.threadName,
            **getattr(record, "luminai", {}),
        }
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{k}={v}" for k, v in getattr(record, "luminai", {}).items())
        return redact(super().format(record) + (f" [{ids}]" if ids else ""))


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Root logging for the service: one stream handler, JSON (or text) lines, context ids attached."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for noisy in (
        "httpx",
        "httpcore",
    ):  # their INFO lines repeat every URL we call, keys in query strings too
        logging.getLogger(noisy).setLevel(logging.WARNING)
