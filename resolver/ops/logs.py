"""Structured logs: one JSON object per line, tagged with the request id of the HTTP request being
served. Secrets never reach a log record: the code logs identities, never Authorization headers or
bodies, and :class:`MalformedHttpFilter` keeps aiohttp's parser from quoting a bad header line.

The request id lives in a context variable (:data:`REQUEST_ID`) that the request middleware
(:mod:`resolver.http.access`) sets for the duration of each request; :class:`RequestIdFilter`, installed
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

from aiohttp import http_exceptions as hx

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "MalformedHttpFilter",
    "RequestIdFilter",
    "new_request_id",
    "sane_request_id",
    "setup_logging",
]

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


# What the parser found wrong, by exception class: fixed words, never the parser's own message,
# which quotes the offending bytes (a header line with its credential, a request line).
_HTTP_ERRORS: tuple[tuple[type[hx.HttpProcessingError], str], ...] = (
    (hx.LineTooLong, "line too long"),
    (hx.BadHttpMethod, "bad method"),
    (hx.BadStatusLine, "bad request line"),
    (hx.InvalidURLError, "bad request target"),
    (hx.InvalidHeader, "bad header"),
    (hx.TransferEncodingError, "bad chunked body"),
    (hx.ContentLengthError, "body shorter than Content-Length"),
    (hx.ContentEncodingError, "bad Content-Encoding"),
    (hx.PayloadEncodingError, "bad body encoding"),
)
# llhttp's reasons ("Invalid header value char") come first in its messages, before ":\n\n  b'…'".
_LLHTTP_REASON = re.compile(r"([A-Za-z][A-Za-z ]{0,60}):\n\n")


def http_error_kind(exc: hx.HttpProcessingError) -> str:
    """A short description of a parse error that quotes nothing the client sent."""
    if isinstance(exc, hx.BadHttpMethod) and exc.message == "Received HTTPS traffic on an HTTP port":
        return "TLS handshake on the plain HTTP port"
    for kind, words in _HTTP_ERRORS:
        if isinstance(exc, kind):
            if kind is hx.LineTooLong and len(exc.args) > 1 and isinstance(exc.args[1], int):
                return f"{words} (limit {exc.args[1]} bytes)"
            return words
    reason = _LLHTTP_REASON.match(exc.message or "")
    return reason.group(1).strip().lower() if reason else "malformed message"


class MalformedHttpFilter(logging.Filter):
    """aiohttp logs a request it cannot parse at error level, with a traceback whose message quotes
    the offending line: an ``Authorization`` header that ends in a control character or exceeds
    8,190 bytes went to the log whole, credential included. Such records are rewritten here: info
    level (aiohttp's own debug stays debug), the client address and the kind of error, no traceback.
    They are a client's mistake or a probe, not the node's error. Installed on the log handler, so
    it sees the records of every ``aiohttp.*`` logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, hx.HttpProcessingError):
            return True
        level = min(record.levelno, logging.INFO)
        if not logging.getLogger(record.name).isEnabledFor(level):
            return False
        remote = record.args[0] if isinstance(record.args, tuple) and len(record.args) == 1 else None
        record.msg, record.args = "malformed HTTP request from %s: %s", (remote or "unknown", http_error_kind(exc))
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.status = exc.code or 400
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
    handler.addFilter(MalformedHttpFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
