"""Requests the HTTP parser cannot read get the node's JSON error, not aiohttp's text.

A request line or header longer than 8,190 bytes, a control character in a header, a bad chunked
body: aiohttp's parser refuses these before any route or middleware sees the request, and its
connection handler answers ``400`` as ``text/plain`` quoting the offending bytes (a request line with
its query, a header line with its credential). Every other error of the node is JSON
``{"responseCode", "message"}``, which API clients (and the OpenAPI document) expect, so
:func:`json_parse_errors` makes these 400s JSON too: responseCode 4 and the kind of error in fixed
words (as the log says it, :func:`resolver.ops.logs.http_error_kind`), never the client's bytes. The
status, the logging (rewritten by :class:`resolver.ops.logs.MalformedHttpFilter`) and the closing of the
connection stay aiohttp's.
"""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from registry.errors import RC_PROTOCOL_ERROR
from resolver.ops.logs import http_error_kind

__all__ = ["json_parse_errors", "parse_error_body"]


def parse_error_body(exc: HttpProcessingError) -> dict[str, object]:
    return {"responseCode": RC_PROTOCOL_ERROR, "message": f"malformed HTTP request: {http_error_kind(exc)}"}


class _JsonErrorsRequestHandler(RequestHandler):
    """aiohttp's protocol for one connection; only the reply to a request it could not parse differs."""

    __slots__ = ()

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        reply = super().handle_error(request, status, exc, message)  # logs, and refuses if a reply was started
        if not isinstance(exc, HttpProcessingError) or not 400 <= status < 500:
            return reply
        response = web.Response(status=status, text=json.dumps(parse_error_body(exc)), content_type="application/json")
        response.force_close()
        return response


def json_parse_errors(handler: RequestHandler) -> RequestHandler:
    """``handler`` (one connection's aiohttp protocol, as ``web.Server`` makes it), answering parse
    errors with a JSON body. The class is swapped rather than the handler built here, so everything
    aiohttp passes to its constructor stays aiohttp's business; the subclass adds no state."""
    if type(handler) is RequestHandler:
        handler.__class__ = _JsonErrorsRequestHandler
    return handler
