"""HANDLE.NET's session resource: ``/api/sessions`` (challenge, answer, status, logout)."""

from __future__ import annotations

import base64

from aiohttp import web

from registry.errors import AuthenticationNeeded
from resolver.http.keys import STATE_KEY
from resolver.http.web import NEW_SESSION_KEY, SESSION_KEY, json_response, request_address, request_caller

__all__ = ["session_routes"]

session_routes = web.RouteTableDef()


@session_routes.post("/api/sessions")
async def open_session(request: web.Request) -> web.Response:
    """A new challenge: ``{"sessionId", "nonce"}`` (unauthenticated sessions are bounded per client
    address; see ``sessions_per_address``)."""
    session = request.app[STATE_KEY].sessions.new(request_address(request))
    nonce = base64.b64encode(session.nonce).decode("ascii")
    return json_response(request, {"sessionId": session.id, "nonce": nonce}, 201)


@session_routes.route("*", "/api/sessions/this")
async def this_session(request: web.Request) -> web.Response:
    """GET: the session's state; PUT/POST with ``Authorization: Handle …``: authenticate it (the
    reply names the session's new id); DELETE: end it."""
    if request.method not in ("GET", "PUT", "POST", "DELETE"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT", "POST", "DELETE"])
    header = request.headers.get("Authorization", "")
    scheme, _, _ = header.strip().partition(" ")
    if scheme.lower() != "handle":
        # No session named: authentication needed, as wherever credentials are missing (401, responseCode
        # 402); the reply's Handle challenge is a fresh session to answer.
        raise AuthenticationNeeded("send Authorization: Handle sessionId=… (and the answer to its challenge)")
    sessions = request.app[STATE_KEY].sessions
    caller = await request_caller(request)
    session = request.get(SESSION_KEY)
    if session is None:
        raise AuthenticationNeeded("unknown or expired session")
    if request.method == "DELETE":
        sessions.drop(session.id)
        request.pop(NEW_SESSION_KEY, None)  # ended: the reply announces no session
        return json_response(request, {"sessionId": session.id, "authenticated": False})
    body = {
        "sessionId": session.id,
        "nonce": base64.b64encode(session.nonce).decode("ascii"),
        "authenticated": caller.identity is not None,
    }
    if caller.identity is not None:
        body["id"] = str(caller.identity)
    return json_response(request, body)
