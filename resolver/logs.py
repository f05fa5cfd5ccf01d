"""Structured logs: one JSON object per line, tagged with the request id of the HTTP request being
served. Secrets never reach a log record: the code logs identities, never Authorization headers or
bodies.

The request id lives in a context variable (:data:`REQUEST_ID`) that the request middleware
(:mod:`resolver.access`) sets for the duration of each request; :class:`RequestIdFilter`, installed
on the handler by :func:`setup_logging`, copies it onto every record logged meanwhile, including
those of tasks the request started.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar

__all__ = ["REQUEST_ID", "JsonFormatter", "RequestIdFilter", "new_request_id", "sane_request_id", "setup_logging"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

REQUEST_ID: ContextVar[str | None] = ContextVar("idnode_request_id", default=None)
# An incoming X-Request-Id is kept only if it looks like an id: printable ASCII without spaces,
# quotes or separators that could forge log fields, at most 128 characters.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/@-]{0,127}")


_ID_PREFIX = uuid.uuid4().hex[:16]  # random per process: ids stay unique across workers and restarts
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """A unique id, cheap enough for every request: a random per-process prefix and a counter."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def sane_request_id(raw: str | None) -> str:
    """``raw`` when it is an acceptable request id, otherwise a fresh one."""
    if raw is not None:
        raw = raw.strip()
        if _SANE_ID.fullmatch(raw):
            return raw
    return new_request_id()


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records logged while a request is being served."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        if rid is not None and "request_id" not in record.__dict__:
            record.request_id = rid
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
