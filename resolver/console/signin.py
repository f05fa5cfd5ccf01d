"""Signing in and out of the console, and where ``/console`` leads.

Sign-in takes the same credentials as the API (an identity and its secret key), checked by the
registry's authenticator (scrypt in its thread pool) inside the guess throttle the API uses, under
the same subject: wrong keys typed here and sent to the API add up, and past the limit both answer
429 with ``Retry-After`` (here a page saying how long to wait). Like the API, it takes credentials
only over TLS, on a loopback listener, or where the operator vouches for the network
(``insecure_auth``). A successful sign-in ends any session the browser had and starts a new one
with a new id (no session fixation).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_session import get_session, new_session

from registry.auth import Identity
from registry.errors import AuthenticationNeeded, InvalidCredential, PermissionDenied
from resolver.console.forms import identity_from_text, text_field
from resolver.console.guard import (
    ENTERPRISE,
    CrossSiteRequest,
    SignedIn,
    check_form,
    check_origin,
    console_role,
    key_print,
    new_token,
    post_form,
    signed_in,
    tokens_match,
)
from resolver.console.sessions import COOKIE_PATH, is_secure
from resolver.console.site import console_state, render
from resolver.http.keys import CONFIG_KEY, STATE_KEY, registry_of
from resolver.http.web import request_address

__all__ = ["SIGNIN_COOKIE", "require", "signin_routes"]

signin_routes = web.RouteTableDef()
SIGNIN_COOKIE = "idnode_console_signin"  # the sign-in form's own token (double-submit)
SIGNIN_PATH = "/console/signin"
MAX_SECRET = 1024


class SessionEnded(PermissionDenied):
    """A form sent after its session ended (signed out, expired, the key changed): sign in again."""


async def require(request: web.Request, role: str | None = None) -> SignedIn:
    """The signed-in person (of ``role`` when given). Not signed in: a page is redirected to the
    sign-in page; a form is refused (403) without changing anything."""
    me = await signed_in(request)
    if me is None:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther(SIGNIN_PATH)
        raise SessionEnded("your console session has ended; sign in again")
    if role is not None and me.role != role:
        whom = "enterprise administrators" if role == ENTERPRISE else "the node's operator"
        raise PermissionDenied(f"this page is for {whom}")
    return me


async def read_form(request: web.Request, me: SignedIn) -> Any:
    """A state-changing form from a signed-in person, its origin and token checked."""
    form = await post_form(request)
    check_form(request, form, me.csrf)
    return form


def home_of(me: SignedIn) -> str:
    return "/console/dashboard" if me.role == ENTERPRISE else "/console/enterprises"


@signin_routes.get("/console")
async def console_home(request: web.Request) -> web.StreamResponse:
    me = await signed_in(request)
    raise web.HTTPSeeOther(home_of(me) if me is not None else SIGNIN_PATH)


def _signin_page(
    request: web.Request, *, identity: str = "", error: str = "", status: int = 200, field: str = "", current: str = ""
) -> web.Response:
    token = request.cookies.get(SIGNIN_COOKIE) or new_token()
    config = request.app[CONFIG_KEY]
    context = {
        "identity": identity,
        "error": error,
        "error_field": field,
        "signin_token": token,
        "done": request.query.get("done", ""),
        "current": current,
        "idle_minutes": max(1, round(config.console_idle_timeout / 60)),
        "lifetime_hours": round(config.console_session_lifetime / 3600, 1),
    }
    response = render(request, "console/signin.html", context, None, status=status)
    if request.cookies.get(SIGNIN_COOKIE) != token:
        response.set_cookie(
            SIGNIN_COOKIE, token, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=is_secure(request)
        )
    return response


@signin_routes.get(SIGNIN_PATH)
async def signin_page(request: web.Request) -> web.StreamResponse:
    """The form; also for someone signed in already (signing in again replaces that session)."""
    me = await signed_in(request)
    return _signin_page(request, current=str(me.identity) if me is not None else "")


def _transport_ok(request: web.Request) -> bool:
    """As the API: credentials over TLS, to a loopback listener, or where ``insecure_auth`` vouches."""
    config = request.app[CONFIG_KEY]
    return is_secure(request) or config.insecure_auth or config.loopback


@signin_routes.post(SIGNIN_PATH)
async def signin(request: web.Request) -> web.StreamResponse:
    form = await post_form(request)
    check_origin(request)
    if not tokens_match(form.get("csrf"), request.cookies.get(SIGNIN_COOKIE)):
        raise CrossSiteRequest("the sign-in form has expired or came from elsewhere; reload the page and sign in")
    if not _transport_ok(request):
        raise AuthenticationNeeded("this node accepts secret keys only over HTTPS")
    typed = text_field(form, "identity", 300)
    secret = form.get("secret")
    try:
        identity = identity_from_text(typed)
    except InvalidCredential:
        return _signin_page(request, identity=typed, error="identity", field="identity", status=400)
    if not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET:
        return _signin_page(request, identity=typed, error="secret", field="secret", status=400)
    registry = registry_of(request)
    address = request_address(request)
    throttle = request.app[STATE_KEY].throttle
    assert throttle is not None, "node not started"

    async def check() -> Identity:
        return await registry.authenticator.authenticate(identity, secret, source=address)

    try:
        # The API's subject for these credentials (resolver.http.web): both count towards one limit.
        await throttle.guard(f"{identity.index}:{identity.key}", address, check)
    except InvalidCredential:
        return _signin_page(request, identity=typed, error="wrong", status=401)
    caller = await registry.caller_of(identity)
    try:
        await console_role(registry, caller)
    except PermissionDenied:
        kind = "auditor" if caller.role == "auditor" else "role"
        return _signin_page(request, identity=typed, error=kind, status=403)
    record = await registry.read_record(identity.key)
    value = record.value_at(identity.index) if record is not None else None
    if value is None:  # deleted since the check a moment ago
        return _signin_page(request, identity=typed, error="wrong", status=401)
    await console_state(request).storage.end(await get_session(request))
    session = await new_session(request)
    session["identity"] = str(identity)
    session["csrf"] = new_token()
    session["key"] = key_print(value.data)
    response = web.HTTPSeeOther("/console")
    response.del_cookie(SIGNIN_COOKIE, path=COOKIE_PATH)
    raise response


@signin_routes.post("/console/signout")
async def signout(request: web.Request) -> web.StreamResponse:
    me = await signed_in(request)
    if me is not None:
        form = await post_form(request)
        check_form(request, form, me.csrf)
        me.session.invalidate()  # deleted from the store when the reply is made
    raise web.HTTPSeeOther(SIGNIN_PATH + "?done=signed-out")
