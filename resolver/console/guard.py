"""Who is signed in to the console, and the checks every state-changing form passes.

A session holds the identity (``index:handle``), a CSRF token and a fingerprint of the stored key
hash the identity signed in with (never the secret key). Each request reads the identity's key
again: when it has changed (rotated, reset by the operator, the identity deleted), the session ends.
The console then acts as that identity through the registry's :class:`~registry.auth.Caller`, with
the same rights checks as the API: an enterprise writes only under its own prefix, and the
bureau's auditor identities cannot sign in at all (they read tallies on ``/bureau``).

Every POST but the sign-in itself carries the session's CSRF token in a hidden field; the sign-in
form carries a token matching a cookie of its own (a double-submit). A POST whose ``Origin`` (or
``Sec-Fetch-Site``) says it came from another site is refused the same way: 403, nothing changed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp_session import Session, get_session

from registry.audit import set_source
from registry.auth import Caller, Identity
from registry.errors import InvalidCredential, InvalidRequest, PermissionDenied
from registry.model import NA_PREFIX
from registry.service import Registry
from registry.stores.base import Enterprise
from resolver.console.sessions import is_secure
from resolver.http.keys import CONFIG_KEY, registry_of
from resolver.http.public_url import public_base_url
from resolver.http.web import request_address

__all__ = [
    "ENTERPRISE",
    "OPERATOR",
    "CrossSiteRequest",
    "SignedIn",
    "check_form",
    "console_role",
    "key_print",
    "new_token",
    "post_form",
    "signed_in",
    "tokens_match",
]

ENTERPRISE = "enterprise"
OPERATOR = "operator"
CSRF_FIELD = "csrf"


class CrossSiteRequest(PermissionDenied):
    """A state-changing request without the form's token, or from another site: 403, nothing changed."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(sent: object, expected: object) -> bool:
    """Constant-time comparison of a form's token with the expected one (tokens are ASCII; a field or
    cookie holding anything else, undecodable bytes included, matches nothing)."""
    if not isinstance(sent, str) or not isinstance(expected, str) or not expected:
        return False
    if not sent.isascii() or not expected.isascii():
        return False
    return hmac.compare_digest(sent.encode("ascii"), expected.encode("ascii"))


def key_print(stored: bytes) -> str:
    """A fingerprint of the stored (already hashed) secret key: whether it changed since sign-in."""
    return hashlib.sha256(stored).hexdigest()[:32]


@dataclass(frozen=True)
class SignedIn:
    """The person behind a request: the registry's caller, their part in the console and their session."""

    caller: Caller
    role: str  # ENTERPRISE or OPERATOR
    enterprise: Enterprise | None
    session: Session

    @property
    def csrf(self) -> str:
        return str(self.session.get("csrf", ""))

    @property
    def identity(self) -> Identity:
        return self.caller.require_authenticated()


async def console_role(registry: Registry, caller: Caller) -> tuple[str, Enterprise | None]:
    """The caller's part in the console: the node's operator, or an enterprise's administrator (the
    identity of its prefix handle). PermissionDenied for anyone else, auditors included."""
    identity = caller.require_authenticated()
    if caller.role == "auditor":
        raise PermissionDenied("the bureau's auditor identities read tallies on /bureau; the console is not for them")
    if caller.node_admin:
        return OPERATOR, None
    if identity.key.startswith(NA_PREFIX + "/"):
        enterprise = await registry.store.get_enterprise(identity.key[len(NA_PREFIX) + 1 :])
        if enterprise is not None:
            return ENTERPRISE, enterprise
    raise PermissionDenied("the console is for enterprise administrators and the node's operator")


async def signed_in(request: web.Request) -> SignedIn | None:
    """The signed-in person, or None (no session, or one that ended: then it is deleted)."""
    session = await get_session(request)
    text = session.get("identity")
    if not isinstance(text, str):
        return None
    registry = registry_of(request)
    try:
        identity = Identity.parse(text)
        record = await registry.read_record(identity.key)
        value = record.value_at(identity.index) if record is not None else None
        if value is None or value.type.upper() != "HS_SECKEY" or key_print(value.data) != session.get("key"):
            raise PermissionDenied("the secret key changed since sign-in")
        caller = await registry.caller_of(identity)
        role, enterprise = await console_role(registry, caller)
    except (PermissionDenied, InvalidCredential):  # the key changed, the identity went, or its role
        session.invalidate()
        return None
    set_source(request_address(request))  # what this person changes is in the audit log as from there
    return SignedIn(caller, role, enterprise, session)


def _own_origins(request: web.Request) -> set[str]:
    scheme = "https" if is_secure(request) else "http"
    origins = {f"{scheme}://{request.host}".lower()}
    config = request.app.get(CONFIG_KEY)
    if config is not None:
        base = urlsplit(public_base_url(config))
        origins.add(f"{base.scheme}://{base.netloc}".lower())
    return origins


def check_origin(request: web.Request) -> None:
    """Refuse a request a browser says came from another site (``Origin``, ``Sec-Fetch-Site``)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise CrossSiteRequest("this form may only be sent from the console's own pages")
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() not in _own_origins(request):
        raise CrossSiteRequest("this form may only be sent from the console's own pages")


FORM_TYPE = "application/x-www-form-urlencoded"


async def post_form(request: web.Request) -> Mapping[str, object]:
    """The body of a console form. The console's forms send ``application/x-www-form-urlencoded``;
    anything else is a 415 and a body that is no such form a 400, both before any check or change."""
    if request.content_type != FORM_TYPE:
        raise web.HTTPUnsupportedMediaType(reason="the console takes its own forms only")
    try:
        return await request.post()
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the form could not be read") from None


def check_form(request: web.Request, form: Mapping[str, object], expected: str) -> None:
    """A state-changing form: from this site, with the token the page gave it."""
    check_origin(request)
    if not tokens_match(form.get(CSRF_FIELD), expected):
        raise CrossSiteRequest("the form's security token is missing or wrong; reload the page and try again")
