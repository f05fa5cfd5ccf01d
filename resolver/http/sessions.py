"""HANDLE.NET-style challenge–response sessions for the HTTP API (``Authorization: Handle …``).

A client without credentials is challenged with ``WWW-Authenticate: Handle sessionId="…",
nonce="…"``. It answers ``Authorization: Handle sessionId="…", id="300:0.NA/…", type="HS_PUBKEY",
cnonce="…", alg="SHA256", signature="…"``: a signature over nonce ‖ cnonce (both base64-decoded)
with the private key whose public half is the HS_PUBKEY value named by ``id``. Later requests
send only ``Authorization: Handle sessionId="…"``.

Sessions live in the process that issued them (bounded in number, expiring when idle); with
several workers a client keeps its connection alive, as HTTP clients do. Each nonce answers one
challenge, and a session that authenticates gets a new id (see :class:`SessionStore`). Secret keys are stored
hashed, so HS_SECKEY is accepted through HTTP Basic, not through this challenge.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa

from registry.auth import Identity
from registry.errors import HandleError, InvalidCredential
from registry.valuedata import decode_public_key

__all__ = ["HandleAuthorization", "Session", "SessionStore", "parse_handle_authorization", "verify_signature"]

_TOKEN = r"[-A-Za-z0-9!#$%&'*+.`^_|~]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*(?:,|$)")
_HASHES = {
    "SHA1": hashes.SHA1,
    "SHA": hashes.SHA1,
    "SHA-1": hashes.SHA1,
    "SHA256": hashes.SHA256,
    "SHA-256": hashes.SHA256,
    "SHA2": hashes.SHA256,
    "SHA-2": hashes.SHA256,
}


@dataclass
class Session:
    id: str
    nonce: bytes
    expires: float
    identity: Identity | None = None
    address: str = "unknown"


@dataclass(frozen=True)
class HandleAuthorization:
    session_id: str | None
    id: str | None
    type: str | None
    cnonce: str | None
    alg: str | None
    signature: str | None

    @property
    def authenticating(self) -> bool:
        return any(x is not None for x in (self.id, self.type, self.alg, self.signature))


def parse_handle_authorization(param: str) -> HandleAuthorization:
    """The parameters of ``Authorization: Handle k="v", …``; InvalidCredential when malformed."""
    values: dict[str, str] = {}
    pos = 0
    text = param.strip()
    while pos < len(text):
        m = _PARAM.match(text, pos)
        if not m:
            raise InvalidCredential("malformed Authorization: Handle header")
        key, value = m.group(1).lower(), m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[key] = value
        pos = m.end()
    ident = values.get("id")
    if ident is not None and "%" in ident:
        try:
            ident = unquote(ident, errors="strict")
        except UnicodeDecodeError:
            raise InvalidCredential("the id of Authorization: Handle is percent-encoded but not UTF-8") from None
    return HandleAuthorization(
        values.get("sessionid"),
        ident,
        values.get("type"),
        values.get("cnonce"),
        values.get("alg"),
        values.get("signature"),
    )


def verify_signature(key_data: bytes, alg: str, message: bytes, signature: bytes) -> bool:
    """Check ``signature`` over ``message`` with the HS_PUBKEY data ``key_data``."""
    try:
        key = decode_public_key(key_data)
    except HandleError:
        return False
    digest = _HASHES.get(alg.upper())
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif digest is None:
            return False
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), digest())
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, message, digest())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(digest()))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


class SessionStore:
    """Sessions of this process, in two pools so that anonymous challenges never push out an
    authenticated session.

    - *Unauthenticated* sessions (a challenge waiting for its answer): at most ``per_address`` per
      client address and ``anonymous_size`` in all (the oldest go first), expiring ``anonymous_ttl``
      seconds after they were issued.
    - *Authenticated* sessions: at most ``size`` (least recently used go first), each expiring
      ``ttl`` seconds after its last use. A session becomes one only through :meth:`authenticate`,
      which issues a *new* id (the id an attacker may have planted is worthless) and a new nonce.

    Each nonce answers one challenge: :meth:`take_nonce` hands it out and puts a fresh one in its
    place before the answer is even checked, so a signed answer can never be replayed, not even
    by two requests racing each other.
    """

    def __init__(
        self,
        *,
        ttl: float = 1800.0,
        size: int = 10_000,
        anonymous_ttl: float = 300.0,
        anonymous_size: int = 10_000,
        per_address: int = 100,
    ) -> None:
        self.ttl = ttl
        self.size = size
        self.anonymous_ttl = anonymous_ttl
        self.anonymous_size = anonymous_size
        self.per_address = per_address
        self._authenticated: OrderedDict[str, Session] = OrderedDict()
        self._anonymous: OrderedDict[str, Session] = OrderedDict()
        self._by_address: dict[str, OrderedDict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._authenticated) + len(self._anonymous)

    @property
    def authenticated_count(self) -> int:
        return len(self._authenticated)

    def new(self, address: str | None = None) -> Session:
        """A new unauthenticated session (a challenge) for a client at ``address``."""
        addr = address or "unknown"
        expires = time.monotonic() + self.anonymous_ttl
        session = Session(secrets.token_urlsafe(24), secrets.token_bytes(16), expires, address=addr)
        self._anonymous[session.id] = session
        mine = self._by_address.setdefault(addr, OrderedDict())
        mine[session.id] = None
        while len(mine) > self.per_address:
            self._drop_anonymous(next(iter(mine)))
        while len(self._anonymous) > self.anonymous_size:
            self._drop_anonymous(next(iter(self._anonymous)))
        return session

    def _drop_anonymous(self, session_id: str) -> None:
        session = self._anonymous.pop(session_id, None)
        if session is None:
            return
        mine = self._by_address.get(session.address)
        if mine is not None:
            mine.pop(session_id, None)
            if not mine:
                del self._by_address[session.address]

    def get(self, session_id: str) -> Session | None:
        now = time.monotonic()
        session = self._authenticated.get(session_id)
        if session is not None:
            if session.expires < now:
                del self._authenticated[session_id]
                return None
            session.expires = now + self.ttl
            self._authenticated.move_to_end(session_id)
            return session
        session = self._anonymous.get(session_id)
        if session is not None and session.expires < now:
            self._drop_anonymous(session_id)
            return None
        return session

    @staticmethod
    def take_nonce(session: Session) -> bytes:
        """The session's nonce, replaced at once by a fresh one: each nonce answers once."""
        nonce, session.nonce = session.nonce, secrets.token_bytes(16)
        return nonce

    def authenticate(self, session: Session, identity: Identity) -> Session:
        """Replace ``session`` by an authenticated one with a new id and nonce."""
        self.drop(session.id)
        expires = time.monotonic() + self.ttl
        fresh = Session(secrets.token_urlsafe(24), secrets.token_bytes(16), expires, identity, session.address)
        self._authenticated[fresh.id] = fresh
        while len(self._authenticated) > self.size:
            self._authenticated.popitem(last=False)
        return fresh

    def drop(self, session_id: str) -> None:
        self._authenticated.pop(session_id, None)
        self._drop_anonymous(session_id)

    @staticmethod
    def challenge(session: Session) -> str:
        nonce = base64.b64encode(session.nonce).decode("ascii")
        return f'Handle sessionId="{session.id}", nonce="{nonce}"'
