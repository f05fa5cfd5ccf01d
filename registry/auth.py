"""Identities, secret-key authentication and HS_ADMIN authorisation.

An identity is ``index:handle``: the value at ``index`` of ``handle`` holds the key that proves it
(HS_SECKEY, stored hashed). Rights come from HS_ADMIN values (RFC 3651 section 3.2.1), directly or
through an HS_VLIST admin group. Anyone named in the HS_ADMIN of the node's own prefix handle is a
node admin and may do everything on the node.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from registry.errors import AuthenticationNeeded, HandleError, InvalidCredential, PermissionDenied
from registry.inputs import MAX_U32, is_uint_text, parse_uint
from registry.model import Record, parse_handle
from registry.secretkeys import SecretHasher
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
        """``300:0.NA/88.118.8`` → Identity; InvalidCredential for anything else (an index of ASCII
        digits in 1..4294967295, by the one rule for client numbers in ``registry.inputs``)."""
        index_text, sep, handle = text.partition(":")
        if not sep or not handle:
            # Never echo the text: a secret typed into the user name field must not come back.
            raise InvalidCredential("the identity (user name) must be <index>:<handle>, e.g. 300:0.NA/88.118.8")
        if not is_uint_text(index_text):
            raise InvalidCredential("the identity's index must be a whole number in ASCII digits, e.g. 300")
        index = parse_uint(index_text, "the identity's index", minimum=1, maximum=MAX_U32, error=InvalidCredential)
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
    """Checks ``index:handle`` + secret against the hashed HS_SECKEY value, in the scrypt pool.

    scrypt is slow on purpose, so a successful check is remembered for ``ttl`` seconds: per identity,
    the stored hash it was checked against and an HMAC of the secret under a key drawn at random for
    this process (so the cache holds nothing that helps anyone guess the secret, even from a memory
    dump of another process). A different stored value (the key was changed, here or on another node
    sharing the store) drops the entry at once; other changes to the record do not. Concurrent
    checks of the same secret against the same stored hash share one scrypt computation (32
    clients starting at once with one identity cost one check, not 32).
    """

    def __init__(self, read: RecordReader, hasher: SecretHasher, *, ttl: float = 300.0, size: int = 4096) -> None:
        self._read = read
        self._hasher = hasher
        self._ttl = ttl
        self._size = size
        self._mac_key = secrets.token_bytes(32)
        # (handle key, index) → (stored hash, HMAC of the secret, expiry on the monotonic clock)
        self._ok: OrderedDict[tuple[str, int], tuple[str, bytes, float]] = OrderedDict()
        self._running: dict[tuple[str, int, str, bytes], asyncio.Task[bool]] = {}

    async def _verify_once(
        self, slot: tuple[str, int], stored: str, mac: bytes, secret: str, source: str | None
    ) -> bool:
        """One scrypt check per (identity, stored hash, secret) at a time; later callers wait for it.
        The check runs as its own task, so a caller that goes away does not cancel it for others."""
        key = (*slot, stored, mac)
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(self._hasher.verify(secret, stored, source))
            self._running[key] = task

            def done(t: asyncio.Task[bool]) -> None:
                self._running.pop(key, None)
                if not t.cancelled():
                    t.exception()  # retrieved, even if every waiter went away

            task.add_done_callback(done)
        return await asyncio.shield(task)

    def _mac(self, secret: str) -> bytes:
        return hmac.new(self._mac_key, secret.encode("utf-8"), hashlib.sha256).digest()

    async def authenticate(self, identity: Identity | str, secret: str, *, source: str | None = None) -> Identity:
        """The identity, once ``secret`` matches its HS_SECKEY; InvalidCredential otherwise,
        ServerBusy when the scrypt pool is full (``source``: the client address, for fairness)."""
        if isinstance(identity, str):
            identity = Identity.parse(identity)
        record = await self._read(identity.key)
        value = record.value_at(identity.index) if record else None
        if value is None or value.type.upper() != "HS_SECKEY":
            raise InvalidCredential(f"no secret key at {identity}")
        try:
            stored = value.data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCredential(f"no usable secret key at {identity}") from None
        slot = (identity.key, identity.index)
        mac = self._mac(secret)
        now = time.monotonic()
        seen = self._ok.get(slot)
        if seen is not None:
            if seen[0] == stored and seen[2] > now and hmac.compare_digest(seen[1], mac):
                self._ok.move_to_end(slot)
                return identity
            if seen[0] != stored or seen[2] <= now:
                del self._ok[slot]  # the key changed (or the entry is stale): forget it
        if not await self._verify_once(slot, stored, mac, secret, source):
            raise InvalidCredential(f"invalid secret key for {identity}")
        self._ok[slot] = (stored, mac, now + self._ttl)
        self._ok.move_to_end(slot)
        while len(self._ok) > self._size:
            self._ok.popitem(last=False)
        return identity


def require(condition: bool, message: str, handle: str | None = None) -> None:
    if not condition:
        raise PermissionDenied(message, handle)
