"""HANDLE.NET-style challenge–response sessions for the HTTP API (``Authorization: Handle …``).

A client without credentials is challenged with ``WWW-Authenticate: Handle sessionId="…",
nonce="…"``. It answers ``Authorization: Handle sessionId="…", id="300:0.NA/…", type="HS_PUBKEY",
cnonce="…", alg="SHA256", signature="…"``: a signature over nonce ‖ cnonce (both base64-decoded)
with the private key whose public half is the HS_PUBKEY value named by ``id``. Later requests
send only ``Authorization: Handle sessionId="…"``.

Sessions live in the process that issued them (bounded in number, expiring when idle); with
several workers a client keeps its connection alive, as HTTP clients do. Secret keys are stored
hashed, so HS_SECKEY is accepted through HTTP Basic, not through this challenge.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

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
        from urllib.parse import unquote

        ident = unquote(ident)
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
    """Sessions of this process: at most ``size``, each expiring ``ttl`` seconds after last use."""

    def __init__(self, *, ttl: float = 1800.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def new(self) -> Session:
        session = Session(secrets.token_urlsafe(24), secrets.token_bytes(16), time.monotonic() + self.ttl)
        self._sessions[session.id] = session
        while len(self._sessions) > self.size:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        now = time.monotonic()
        if session is None or session.expires < now:
            self._sessions.pop(session_id, None)
            return None
        session.expires = now + self.ttl
        self._sessions.move_to_end(session_id)
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    @staticmethod
    def challenge(session: Session) -> str:
        nonce = base64.b64encode(session.nonce).decode("ascii")
        return f'Handle sessionId="{session.id}", nonce="{nonce}"'
