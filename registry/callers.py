"""Callers: who a request's credentials prove, what role they hold, and what they may read or list.

Rights for writes are checked by the write service (:mod:`registry.writes`), which owns every
change; this module answers "who is calling" and "may they see non-public values"."""

from __future__ import annotations

from collections.abc import AsyncIterator

from registry import valuedata
from registry.auth import Caller, Identity, SecretKeyAuthenticator, has_right
from registry.errors import HandleNotFound, InvalidHandle, PermissionDenied
from registry.model import Record, normalise_prefix, prefix_handle_of
from registry.namespace import Namespace
from registry.secretkeys import SecretHasher
from registry.stores.base import ListedHandle

__all__ = ["Callers", "key_range_end", "require_node_admin"]


def require_node_admin(caller: Caller) -> None:
    caller.require_authenticated()
    if not caller.node_admin:
        raise PermissionDenied("only the node administrator manages promoters and enterprises")


class Callers:
    """Authenticates secret-key credentials (scrypt off the loop, results cached) and reads roles."""

    def __init__(self, ns: Namespace, hasher: SecretHasher) -> None:
        self.ns = ns
        self.authenticator = SecretKeyAuthenticator(ns.read_record, hasher, ttl=ns.settings.auth_cache_ttl)

    async def caller_for(self, identity: Identity | str, secret: str, *, source: str | None = None) -> Caller:
        """The caller proven by ``secret`` (InvalidCredential when wrong, ServerBusy when the scrypt
        pool is full; ``source`` is the client address, so one address cannot take every slot)."""
        checked = await self.authenticator.authenticate(identity, secret, source=source)
        return await self.caller_of(checked)

    async def caller_of(self, identity: Identity) -> Caller:
        ns = self.ns
        node_record = await ns.read_record(ns.node_admin_key)
        node_admin = await has_right(identity, node_record, valuedata.ALL_PERMS, ns.read_record)
        role = await ns.store.get_meta(f"role:{identity.key}:{identity.index}")
        return Caller(identity=identity, node_admin=node_admin, role=role)

    async def may_read_private(self, caller: Caller, record: Record) -> bool:
        """Non-public values are for node admins and identities with READ_VALUE on the handle."""
        if caller.identity is None:
            return False
        if caller.node_admin:
            return True
        return await has_right(caller.identity, record, valuedata.READ_VALUE, self.ns.read_record)

    async def require_lister(self, caller: Caller, prefix: str) -> str:
        """The normalised ``prefix`` if the caller may list its handles: the node admin, or an
        identity with LIST_HANDLES on the prefix handle (an enterprise's administrator); never the
        bureau's read-only auditors, who see tallies, not identifiers."""
        identity = caller.require_authenticated()
        if caller.role == "auditor":
            raise PermissionDenied("the auditor identity does not list identifiers", prefix)
        try:
            name = self.ns.parse(prefix_handle_of(prefix))
        except InvalidHandle:
            raise InvalidHandle(f"invalid prefix {prefix!r}", prefix) from None
        self.ns.require_responsible(name)
        if not caller.node_admin:
            record = await self.ns.read_record(name.key)
            if not await has_right(identity, record, valuedata.LIST_HANDLES, self.ns.read_record):
                raise PermissionDenied(f"{identity} may not list handles under {prefix}", prefix)
        return normalise_prefix(prefix)

    async def list_handles(self, caller: Caller, prefix: str, page: int, page_size: int) -> tuple[int, list[str]]:
        """One page of the handles under ``prefix``, for node admins and holders of LIST_HANDLES."""
        norm = await self.require_lister(caller, prefix)
        return await self.ns.store.list_handles(norm, page, page_size)

    async def handles_from(
        self, caller: Caller, prefix: str, start: str | None, count: int, *, chunk: int = 100
    ) -> AsyncIterator[list[ListedHandle]]:
        """Up to ``count`` handles under ``prefix`` with their records, in listing order from the
        handle ``prefix/start`` on (from the first when None), ``chunk`` at a time so a caller holds
        few records at once. Rights as :meth:`list_handles`, checked before the first chunk;
        HandleNotFound when ``start`` names no handle."""
        norm = await self.require_lister(caller, prefix)
        first = self.ns.parse(f"{prefix}/{start}").key if start is not None else None
        after, left = -1, count
        while left > 0:
            rows = await self.ns.store.handles_from(norm, min(chunk, left), start=first, after=after)
            if not rows:
                if first is not None:
                    raise HandleNotFound(f"no handle {prefix}/{start} to start from", f"{prefix}/{start}")
                return
            first = None
            left -= len(rows)
            after = rows[-1].position
            yield rows

    async def find_handles(
        self,
        caller: Caller,
        prefix: str,
        starts_with: str,
        limit: int,
        *,
        after: str | None = None,
        before: str | None = None,
    ) -> list[tuple[str, str]]:
        """(key, handle) of up to ``limit`` handles under ``prefix`` whose suffix starts with
        ``starts_with`` (compared as the node compares suffixes), in key order: the first ones, those
        past the key ``after``, or the last ones before the key ``before``. Rights as :meth:`list_handles`."""
        norm = await self.require_lister(caller, prefix)
        start = self.ns.parse(f"{prefix}/{starts_with or 'x'}").key
        start = start if starts_with else start[:-1]  # "<PREFIX>/" alone: every suffix
        end = key_range_end(start)
        rows = await self.ns.store.handles_in_range(norm, start, end, limit, after=after, before=before)
        return rows if end is not None else [r for r in rows if r[0].startswith(start)]


def key_range_end(start: str) -> str | None:
    """The first string after every string that starts with ``start`` (code point order): its last
    character moved up by one, skipping the surrogates UTF-8 cannot carry; None past U+10FFFF."""
    last = ord(start[-1]) + 1
    if last == 0xD800:
        last = 0xE000
    if last > 0x10FFFF:
        return None
    return start[:-1] + chr(last)
