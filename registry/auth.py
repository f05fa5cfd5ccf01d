"""Identities, secret-key authentication and HS_ADMIN authorisation.

An identity is ``index:handle``: the value at ``index`` of ``handle`` holds the key that proves it
(HS_SECKEY, stored hashed). Rights come from HS_ADMIN values (RFC 3651 section 3.2.1), directly or
through an HS_VLIST admin group. Anyone named in the HS_ADMIN of the node's own prefix handle is a
node admin and may do everything on the node.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from registry.errors import AuthenticationNeeded, HandleError, InvalidCredential, PermissionDenied
from registry.model import Record, parse_handle
from registry.secretkeys import is_hashed, verify_secret
from registry.valuedata import AdminRef, decode_admin, decode_vlist

__all__ = ["Caller", "Identity", "SecretKeyAuthenticator", "admin_refs", "has_right"]

ANONYMOUS_NAME = "anonymous"


@dataclass(frozen=True, slots=True)
class Identity:
    index: int
    handle: str
    key: str  # normalised handle

    @classmethod
    def parse(cls, text: str) -> Identity:
        """``300:0.NA/88.118.8`` → Identity; InvalidCredential for anything else."""
        index_text, sep, handle = text.partition(":")
        if not sep or not index_text.isdigit() or not handle:
            # Never echo the text: a secret typed into the user name field must not come back.
            raise InvalidCredential("the identity (user name) must be <index>:<handle>, e.g. 300:0.NA/88.118.8")
        index = int(index_text)
        if not 0 < index <= 0xFFFFFFFF:
            raise InvalidCredential("the identity's index is out of range (1..4294967295)")
        try:
            name = parse_handle(handle)
        except Exception:
            raise InvalidCredential("the identity names an invalid handle") from None
        return cls(index, handle, name.key)

    def __str__(self) -> str:
        return f"{self.index}:{self.handle}"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking. ``identity`` None is an anonymous caller; ``role`` narrows what a known
    identity may do (``auditor`` reads tallies and writes nothing)."""

    identity: Identity | None = None
    node_admin: bool = False
    role: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.identity is not None

    @property
    def name(self) -> str:
        return str(self.identity) if self.identity else ANONYMOUS_NAME

    def require_authenticated(self) -> Identity:
        if self.identity is None:
            raise AuthenticationNeeded("authentication needed")
        return self.identity


ANONYMOUS = Caller()

RecordReader = Callable[[str], Awaitable[Record | None]]


def admin_refs(record: Record | None) -> list[AdminRef]:
    """The HS_ADMIN entries of a record (undecodable ones are ignored, never trusted)."""
    if record is None:
        return []
    out = []
    for v in record.values:
        if v.type.upper() == "HS_ADMIN":
            try:
                out.append(decode_admin(v.data))
            except (ValueError, HandleError):
                continue
    return out


async def _names(ref_key: str, ref_index: int, who: Identity, read: RecordReader, depth: int) -> bool:
    """Does the admin reference (handle, index) name ``who``, directly or through HS_VLIST groups?"""
    if ref_key == who.key and ref_index in (0, who.index):
        return True
    if depth <= 0:
        return False
    group = await read(ref_key)
    if group is None:
        return False
    for v in group.values:
        if v.type.upper() != "HS_VLIST" or (ref_index and v.index != ref_index):
            continue
        try:
            members = decode_vlist(v.data)
        except (ValueError, HandleError):
            continue
        for m in members:
            try:
                mkey = parse_handle(m.handle).key
            except Exception:
                continue
            if await _names(mkey, m.index, who, read, depth - 1):
                return True
    return False


async def has_right(who: Identity, record: Record | None, perm: int, read: RecordReader) -> bool:
    """True when an HS_ADMIN value of ``record`` grants ``perm`` to ``who``."""
    for ref in admin_refs(record):
        if not ref.perms & perm:
            continue
        try:
            ref_key = parse_handle(ref.handle).key
        except Exception:
            continue
        if await _names(ref_key, ref.index, who, read, depth=3):
            return True
    return False


class SecretKeyAuthenticator:
    """Checks ``index:handle`` + secret against the hashed HS_SECKEY value.

    scrypt is slow on purpose, so a successful check is remembered for ``ttl`` seconds, keyed by a
    digest of the secret and the version of the identity's record: changing the key (a new version)
    forgets it at once.
    """

    def __init__(self, read: RecordReader, *, ttl: float = 300.0, size: int = 4096) -> None:
        self._read = read
        self._ttl = ttl
        self._size = size
        self._ok: OrderedDict[tuple[str, int, int, bytes], float] = OrderedDict()

    async def authenticate(self, identity_text: str, secret: str) -> Identity:
        identity = Identity.parse(identity_text)
        record = await self._read(identity.key)
        value = record.value_at(identity.index) if record else None
        if value is None or value.type.upper() != "HS_SECKEY":
            raise InvalidCredential(f"no secret key at {identity}")
        try:
            stored = value.data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCredential(f"no usable secret key at {identity}") from None
        digest = hashlib.sha256(secret.encode("utf-8")).digest()
        cache_key = (identity.key, identity.index, record.version, digest)
        now = time.monotonic()
        seen = self._ok.get(cache_key)
        if seen is not None and seen > now:
            self._ok.move_to_end(cache_key)
            return identity
        if not is_hashed(stored) or not verify_secret(secret, stored):
            raise InvalidCredential(f"invalid secret key for {identity}")
        self._ok[cache_key] = now + self._ttl
        while len(self._ok) > self._size:
            self._ok.popitem(last=False)
        return identity


def require(condition: bool, message: str, handle: str | None = None) -> None:
    if not condition:
        raise PermissionDenied(message, handle)
