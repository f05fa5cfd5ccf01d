"""Small HTTP helpers shared by the route modules: JSON replies, query flags, bodies, callers."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from registry.audit import set_source
from registry.auth import ANONYMOUS, Caller, Identity
from registry.errors import AuthenticationNeeded, HandleError, InvalidCredential, InvalidRequest, ServerError
from registry.inputs import decode_json
from resolver.http.bodies import ACCEPTED_ENCODINGS, UnsupportedEncoding, body_coding, decode_body
from resolver.http.credentials import parse_basic
from resolver.http.keys import CONFIG_KEY, STATE_KEY, registry_of
from resolver.http.sessions import Session, SessionStore, parse_handle_authorization, verify_signature
from resolver.http.statuses import http_status
from resolver.http.throttle import GuessThrottle, TooManyFailures, client_address

__all__ = [
    "NEW_SESSION_KEY",
    "SESSION_KEY",
    "announce_session",
    "error_body",
    "error_response",
    "flag",
    "json_response",
    "read_json",
    "request_address",
    "request_caller",
]

log = logging.getLogger("idnode")
# The Handle session this request used or authenticated (aiohttp request key).
SESSION_KEY: web.RequestKey[Session] = web.RequestKey("handle_session", Session)
# The session this request authenticated (a new one, with a new id): the reply announces it.
NEW_SESSION_KEY: web.RequestKey[Session] = web.RequestKey("new_handle_session", Session)
_CALLBACK = re.compile(r"^[A-Za-z_$][\w$]{0,63}(\.[A-Za-z_$][\w$]{0,63}){0,7}$", re.ASCII)
JSON_TYPE = "application/json"


def flag(request: web.Request, name: str) -> bool:
    """HANDLE.NET boolean query flags: true when present without a value, or ``true``/``yes``."""
    if name not in request.query:
        return False
    return request.query.get(name, "").strip().lower() in ("", "true", "yes", "1")


def json_response(request: web.Request, body: dict[str, Any], status: int = 200, headers: dict | None = None):
    """A JSON reply honouring ``pretty`` and ``callback`` (JSONP).

    JSONP is for anonymous GETs only: a script tag on any site can make a browser send the Basic
    credentials it remembers, and a JSONP reply hands what they may read to that site. A request
    with an Authorization header and ``callback`` is refused (400, in plain JSON)."""
    pretty = flag(request, "pretty")
    text = json.dumps(body, ensure_ascii=False, indent=2 if pretty else None, separators=None if pretty else (",", ":"))
    callback = request.query.get("callback")
    if callback is not None and request.method == "GET":
        if "Authorization" in request.headers:
            raise InvalidRequest("callback (JSONP) is served to anonymous requests only; drop it or the credentials")
        if not _CALLBACK.fullmatch(callback):
            raise InvalidRequest("callback must be a JavaScript identifier (letters, digits, _ and $, dotted)")
        return web.Response(
            text=f"/**/{callback}({text});", status=status, content_type="application/javascript", headers=headers
        )
    return web.Response(text=text, status=status, content_type=JSON_TYPE, headers=headers)


def error_body(exc: HandleError) -> dict[str, Any]:
    body: dict[str, Any] = {"responseCode": exc.code}
    if exc.handle is not None:
        body["handle"] = exc.handle
    body["message"] = exc.message
    return body


def error_response(request: web.Request, exc: HandleError, status: int | None = None) -> web.Response:
    """The JSON error reply. 401 carries the challenges (Basic, and Handle with a new session), 429
    (too many failed attempts) and 503 (busy) carry Retry-After."""
    headers = CIMultiDict[str]()
    if isinstance(exc, TooManyFailures):
        status = status or 429
    status = status or http_status(exc.code)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None and status in (429, 503):
        headers["Retry-After"] = str(retry_after)
    if status == 401:
        headers.add("WWW-Authenticate", 'Basic realm="idnode"')
        state = request.app.get(STATE_KEY)
        if state is not None:
            session = state.sessions.new(request_address(request))
            headers.add("WWW-Authenticate", state.sessions.challenge(session))
    try:
        return json_response(request, error_body(exc), status, headers)
    except InvalidRequest:  # a bad callback name: answer plain JSON
        text = json.dumps(error_body(exc), ensure_ascii=False)
        return web.Response(text=text, status=status, content_type=JSON_TYPE, headers=headers)


async def read_json(request: web.Request, *, require_type: bool = True) -> Any:
    """The request body as JSON: Content-Type application/json, strict UTF-8, size-limited by the app
    (``max_body_bytes``, before and after any gzip/deflate Content-Encoding: resolver.http.bodies)."""
    ctype = request.content_type
    if require_type and ctype != JSON_TYPE:
        raise InvalidRequest(f"Content-Type must be {JSON_TYPE}, got {ctype or 'none'}")
    coding = body_coding(request)
    limit = request.app[CONFIG_KEY].max_body_bytes
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raw = None
    # Answered here as JSON (400, responseCode 4) so the error carries the handle like any other.
    body = decode_body(raw, coding, limit) if raw is not None else None
    if body is None:
        raise InvalidRequest(f"request body too large (limit {limit} bytes)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise InvalidRequest("empty body")
    return decode_json(text)


async def answer(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Run the handler; every failure leaves as a JSON body with a responseCode, never a stack trace
    or HTML (called by the one middleware in resolver.http.access)."""
    try:
        return await handler(request)
    except UnsupportedEncoding as exc:
        response = error_response(request, exc, 415)
        response.headers["Accept-Encoding"] = ACCEPTED_ENCODINGS
        return response
    except HandleError as exc:
        return error_response(request, exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[CONFIG_KEY].max_body_bytes
        return error_response(request, InvalidRequest(f"request body too large (limit {limit} bytes)"), 413)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, InvalidRequest(exc.reason or "invalid request"), exc.status)
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            # The client closed the connection while its body was being read: nothing to answer.
            log.debug("client went away during %s %s", request.method, request.path)
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(request, ServerError("internal server error"), 500)


CLIENT_CLOSED_REQUEST = 499  # nginx's status for it; counted in the metrics, never sent


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _transport_ok(request: web.Request) -> bool:
    """Credentials travel over TLS, to a node bound to loopback only, or where the operator vouches
    for the network (``insecure_auth``: behind a TLS-terminating proxy). The peer address is not
    trusted: a proxy on the same host would make every caller look local."""
    config = request.app[CONFIG_KEY]
    return request.secure or config.insecure_auth or config.loopback


async def _handle_scheme(request: web.Request, param: str) -> Caller:
    """``Authorization: Handle …``: answer a challenge (HS_PUBKEY) or continue a session.

    An answer consumes the session's nonce before it is checked (a signed answer never counts
    twice) and, when it verifies, the session is replaced by an authenticated one with a new id,
    which the reply carries in ``WWW-Authenticate: Handle sessionId=…`` (see
    :func:`announce_session`). Wrong answers count towards the guess throttle."""
    auth = parse_handle_authorization(param)
    sessions = request.app[STATE_KEY].sessions
    if auth.session_id is None:
        raise InvalidCredential("Authorization: Handle needs the sessionId of a challenge")
    session = sessions.get(auth.session_id)
    if session is None:
        raise InvalidCredential("unknown or expired session; answer the new challenge")
    registry = registry_of(request)
    if not auth.authenticating:
        if session.identity is None:
            raise AuthenticationNeeded("session not authenticated; answer its challenge")
        request[SESSION_KEY] = session
        return await registry.caller_of(session.identity)
    nonce = sessions.take_nonce(session)
    if None in (auth.id, auth.type, auth.cnonce, auth.alg, auth.signature):
        raise InvalidCredential("Authorization: Handle needs id, type, cnonce, alg and signature")
    if auth.type != "HS_PUBKEY":
        raise InvalidCredential("challenge-response takes type HS_PUBKEY; secret keys go through Basic")
    identity = Identity.parse(auth.id or "")

    async def check() -> Identity:
        try:
            cnonce = base64.b64decode(auth.cnonce or "", validate=True)
            signature = base64.b64decode(auth.signature or "", validate=True)
        except ValueError:
            raise InvalidCredential("cnonce and signature must be base64") from None
        record = await registry.read_record(identity.key)
        value = record.value_at(identity.index) if record else None
        if value is None or value.type.upper() != "HS_PUBKEY":
            raise InvalidCredential(f"no public key at {identity}")
        if not verify_signature(value.data, auth.alg or "", nonce + cnonce, signature):
            raise InvalidCredential(f"signature does not verify with the key at {identity}")
        return identity

    await _throttle(request).guard(_subject(identity), request_address(request), check)
    request[SESSION_KEY] = request[NEW_SESSION_KEY] = sessions.authenticate(session, identity)
    return await registry.caller_of(identity)


def request_address(request: web.Request) -> str:
    """The client's address as the throttle and the session bounds count it (through trusted
    proxies' ``X-Forwarded-For``; IPv6 by /64)."""
    config = request.app.get(CONFIG_KEY)
    proxies = config.proxy_networks() if config is not None else ()
    return client_address(request.remote, request.headers.get("X-Forwarded-For"), proxies)


def _throttle(request: web.Request) -> GuessThrottle:
    throttle = request.app[STATE_KEY].throttle
    assert throttle is not None, "node not started"
    return throttle


def _subject(identity: Identity) -> str:
    return f"{identity.index}:{identity.key}"


async def request_caller(request: web.Request) -> Caller:
    """Authenticate the request: HTTP Basic (``index:handle`` + secret key) or a Handle
    challenge-response session (HS_PUBKEY); anonymous when there are no credentials.

    Wrong credentials raise InvalidCredential (401 with fresh challenges); repeated ones from one
    address raise TooManyFailures (429); a full scrypt pool raises ServerBusy (503)."""
    header = request.headers.get("Authorization")
    if not header:
        return ANONYMOUS
    # What this request changes is recorded in the audit log as coming from its client.
    set_source(request_address(request))
    scheme, _, param = header.strip().partition(" ")
    if scheme.lower() not in ("basic", "handle"):
        raise InvalidCredential("unsupported authorization scheme; use Basic or Handle")
    if not _transport_ok(request):
        raise AuthenticationNeeded("credentials are accepted only over HTTPS on this node")
    if scheme.lower() == "handle":
        return await _handle_scheme(request, param)
    credentials = parse_basic(param)
    identity = Identity.parse(credentials.identity)
    address = request_address(request)
    registry = registry_of(request)

    async def check() -> Identity:
        return await registry.authenticator.authenticate(identity, credentials.secret, source=address)

    await _throttle(request).guard(_subject(identity), address, check)
    return await registry.caller_of(identity)


async def announce_session(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: a reply to a request that authenticated a Handle session tells the
    client the session's new id (and nonce) in ``WWW-Authenticate: Handle sessionId=…``."""
    session = request.get(NEW_SESSION_KEY)
    if session is not None and "WWW-Authenticate" not in response.headers:
        response.headers["WWW-Authenticate"] = SessionStore.challenge(session)
