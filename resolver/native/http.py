"""Native Handle protocol messages over HTTP: the node's HTTP interface as HANDLE.NET's client uses it.

The node's HS_SITE lists its HTTP port as an HTTP interface. To HANDLE.NET's Java client
(``HandleResolver.sendHttpRequest``) that interface carries native messages: ``POST /<handle,
percent-encoded>`` with ``Content-Type`` and ``Accept`` ``application/x-hdl-message`` and a body that is
an envelope and a message exactly as over TCP; the answer is the reply's envelope and message with the
same content type (the client reads the status line but not the status). It falls back to it when
UDP and TCP fail, and uses it alone when the site lists no UDP/TCP interface.

This route matches only ``POST`` requests of that content type, at any path, and answers them with
the same :class:`~resolver.native.handler.NativeHandler` as the UDP and TCP listeners (the same
operations, responses and 262,144-byte message limit), as HANDLE.NET's server does (its proxy hands
such POSTs to its native servlet whatever the path; a leading CR or LF before the envelope is skipped
as there). Every other request goes on to the API's routes, with their 404 and 405 answers as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from registry.errors import RC_PROTOCOL_ERROR
from resolver.native.codec import ENVELOPE_SIZE, MAX_MESSAGE
from resolver.native.handler import NativeHandler

__all__ = ["HDL_MIME_TYPE", "NATIVE_HTTP_KEY", "NativeHttp", "add_native_http_route"]

HDL_MIME_TYPE = "application/x-hdl-message"  # HANDLE.NET Common.HDL_MIME_TYPE
_MAX_BODY = 1 + ENVELOPE_SIZE + MAX_MESSAGE  # a leading CR or LF, the envelope, the largest message


@dataclass
class NativeHttp:
    """The handler the route answers with; set by the app's lifecycle once the node has started."""

    handler: NativeHandler | None = None


NATIVE_HTTP_KEY: web.AppKey[NativeHttp] = web.AppKey("native_http", NativeHttp)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"responseCode": RC_PROTOCOL_ERROR, "message": message}, status=status)


async def native_message(request: web.Request) -> web.StreamResponse:
    """One native request in, its reply out (``200``, ``application/x-hdl-message``)."""
    handler = request.app[NATIVE_HTTP_KEY].handler
    if handler is None:
        return _error(503, "the node is starting")
    if request.content_length is not None and request.content_length > _MAX_BODY:
        return _error(413, f"a native message is at most {MAX_MESSAGE} bytes after its {ENVELOPE_SIZE}-byte envelope")
    data = bytearray()
    try:
        async for chunk in request.content.iter_chunked(65_536):
            data += chunk
            if len(data) > _MAX_BODY:
                return _error(413, f"a native message is at most {MAX_MESSAGE} bytes after its envelope")
    except ConnectionError:  # the client went away, or was cut off (resolver.http.timeouts)
        return _error(400, "the connection closed before the whole message arrived")
    if data[:1] in (b"\r", b"\n"):
        del data[:1]
    if len(data) < ENVELOPE_SIZE:
        handler.stats.dropped += 1
        return _error(400, f"the body must be a {ENVELOPE_SIZE}-byte envelope and a message")
    envelope, payload = bytes(data[:ENVELOPE_SIZE]), bytes(data[ENVELOPE_SIZE:])
    length = int.from_bytes(envelope[16:20], "big")
    if length != len(payload):
        wire = handler.refuse(envelope, f"envelope announces {length} message bytes, the body holds {len(payload)}")
    else:
        wire = await handler.respond(envelope, payload)
    if wire is None:  # a response, not a request: nothing to answer
        return _error(400, "the body is a response, not a request")
    return web.Response(body=wire, content_type=HDL_MIME_TYPE, headers={"Cache-Control": "no-store"})


class _NativeMessageResource(web.DynamicResource):
    """``/{handle}`` that matches only ``POST`` requests of content type ``application/x-hdl-message``."""

    async def resolve(self, request: web.Request) -> Any:
        if request.method != "POST" or request.content_type.lower() != HDL_MIME_TYPE:
            return None, set()
        return await super().resolve(request)


def add_native_http_route(app: web.Application) -> None:
    """Register the route and its state on ``app`` (before it starts)."""
    app[NATIVE_HTTP_KEY] = NativeHttp()
    resource = _NativeMessageResource("/{handle:.*}", name="native_message")
    app.router.register_resource(resource)
    resource.add_route("POST", native_message)
