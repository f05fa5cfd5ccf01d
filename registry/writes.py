"""The write service: the only code that changes identifier data.

Single writes, batches, CLI imports, enterprise onboarding, auditors and the node's bootstrap all
reach the store through :class:`WriteService`, so validation, authorisation and change
notification (cache invalidation) are the same on every path.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from registry import valuedata
from registry.admin_values import default_admin, hash_secrets
from registry.auth import Caller, has_right
from registry.errors import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    InvalidValue,
    NotResponsible,
    PermissionDenied,
    ServerError,
    ValueAlreadyExists,
    ValuesNotFound,
)
from registry.model import HandleName, HandleValue, Record, normalise_prefix, parse_handle, prefix_handle_of
from registry.namespace import Namespace
from registry.packing import unpack_record
from registry.secretkeys import SecretHasher, is_hashed
from registry.stores.base import MUST_NOT_EXIST, Enterprise, Gs1Prefix, HandleWrite, WriteOutcome, WriteResult
from registry.templates_service import TemplateService

__all__ = ["ChangeListener", "WriteReport", "WriteService", "perms_for_change"]

ChangeListener = Callable[[Sequence[str]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WriteReport:
    handle: str
    created: bool
    version: int


class WriteService:
    """Validates, authorises and applies every change; notifies listeners after each commit."""

    def __init__(self, ns: Namespace, hasher: SecretHasher, templates: TemplateService) -> None:
        self.ns = ns
        self.hasher = hasher
        self.templates = templates
        self._listeners: list[ChangeListener] = []

    # -- listeners (cache invalidation) --------------------------------------------------------
    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def notify(self, keys: Sequence[str]) -> None:
        """Tell the listeners that the records at ``keys`` changed (or may have)."""
        for listener in self._listeners:
            await listener(keys)

    # -- rights ------------------------------------------------------------------------------
    async def _prefix_record(self, name: HandleName) -> Record | None:
        prefix = name.suffix if name.is_prefix_handle else name.prefix
        if name.is_prefix_handle:
            # The admin of 0.NA/88.118.8.1001 is found on its parent prefix handle.
            parent = prefix.rsplit(".", 1)[0] if "." in prefix else prefix
            return await self.ns.read_record(parse_handle(prefix_handle_of(parent)).key)
        return await self.ns.read_record(parse_handle(prefix_handle_of(prefix)).key)

    async def _authorise(self, caller: Caller, name: HandleName, current: Record | None, perms: list[int]) -> None:
        """Raise unless ``caller`` holds every right in ``perms`` for a write on ``name``."""
        identity = caller.require_authenticated()
        if caller.role == "auditor":
            raise PermissionDenied("the auditor identity cannot write", name.text)
        if caller.node_admin:
            return
        prefix_record = await self._prefix_record(name)
        if name.is_prefix_handle and current is not None:
            # An enterprise administers its own prefix handle through the HS_ADMIN in it.
            prefix_record = current
        # An enterprise writes only under its own prefix: it must be an admin of that prefix handle.
        if not await has_right(identity, prefix_record, valuedata.ALL_PERMS, self.ns.read_record):
            raise PermissionDenied(f"{identity} is not an administrator of the prefix of {name.text}", name.text)
        target = prefix_record if current is None else current
        for perm in perms:
            if not await has_right(identity, target, perm, self.ns.read_record):
                raise PermissionDenied(f"{identity} lacks {valuedata.perm_name(perm)} on {name.text}", name.text)

    async def _check_enterprise(self, caller: Caller, name: HandleName) -> int | None:
        """The enterprise whose prefix holds ``name`` (None for node handles); refuses writes under a
        disabled enterprise unless the caller is a node admin."""
        if name.is_prefix_handle:
            enterprise = await self.ns.store.get_enterprise(name.suffix)
            if enterprise is not None and enterprise.status != "active" and not caller.node_admin:
                raise PermissionDenied(f"enterprise {enterprise.prefix} is disabled", name.text)
            return None
        enterprise = await self.ns.store.get_enterprise(name.prefix)
        if enterprise is None:
            if normalise_prefix(name.prefix) != self.ns.node_prefix_norm:
                raise NotResponsible(f"prefix {name.prefix} is not allocated on this node", name.text)
            return None
        if enterprise.status != "active" and not caller.node_admin:
            raise PermissionDenied(f"enterprise {enterprise.prefix} is disabled", name.text)
        return enterprise.id

    # -- values --------------------------------------------------------------------------------
    def _prepare(self, values: Sequence[HandleValue], now: int | None = None) -> tuple[HandleValue, ...]:
        """Stamp values with the write time and check HS_ADMIN data. HS_SECKEY values must be hashed
        already (:meth:`hash_secrets`); one that is not is refused rather than stored in clear."""
        now = self.ns.clock() if now is None else now
        out = []
        for v in values:
            kind = v.type.upper()
            if kind == "HS_SECKEY":
                if not is_hashed(v.data.decode("utf-8", "replace")):
                    raise InvalidValue(f"HS_SECKEY at index {v.index} was not hashed")
            elif kind == "HS_ADMIN":
                try:
                    valuedata.decode_admin(v.data)
                except (ValueError, HandleError) as exc:
                    raise InvalidValue(f"HS_ADMIN at index {v.index}: {exc}") from None
            out.append(v if v.timestamp == now else replace(v, timestamp=now))
        return tuple(out)

    def _default_admin(self, caller: Caller) -> HandleValue:
        return default_admin(caller, self.ns.clock())

    # -- writes ------------------------------------------------------------------------------
    async def put_handle(
        self,
        caller: Caller,
        name: HandleName,
        values: Sequence[HandleValue],
        *,
        overwrite: bool = True,
        indexes: Sequence[int] | None = None,
        mint: bool = False,
    ) -> WriteReport:
        """Create or replace a handle (``indexes`` None), or add/replace only the given values."""
        caller.require_authenticated()
        if mint:
            name = self.ns.parse(name.text + uuid.uuid4().hex)
        self.ns.require_responsible(name)
        limits = self.ns.settings.value_limits
        values = await hash_secrets(self.hasher, values)  # once, before the compare-and-set retries
        for _ in range(8):  # compare-and-set retries when a concurrent writer wins the race
            row = await self.ns.store.get(name.key)
            current = unpack_record(row.packed) if row else None
            added = False
            if indexes is None:
                new_values, perms, expect = self._replace_all(caller, name, current, values, overwrite)
            else:
                if current is None:
                    raise HandleNotFound("handle not found", name.text)
                new_values, perms = self._merge(name, current, values, indexes, overwrite)
                expect = current.version
                added = bool({v.index for v in new_values} - {v.index for v in current.values})
            if len(new_values) > limits.max_values:
                raise InvalidValue(f"a handle may hold at most {limits.max_values} values", name.text)
            await self._authorise(caller, name, current, perms)
            enterprise_id = await self._check_enterprise(caller, name)
            await self.templates.check_template(name, new_values, "values")
            if current is None and not name.is_prefix_handle:
                await self._require_prefix_handle(name)
            if name.is_prefix_handle and current is None and not caller.node_admin:
                raise PermissionDenied("only the node administrator creates prefixes", name.text)
            write = HandleWrite(
                key=name.key,
                handle=name.text if current is None else current.handle,
                prefix=normalise_prefix(name.prefix),
                values=self._prepare(new_values),
                expect=expect,
                enterprise_id=enterprise_id,
            )
            (result,) = await self.write_many([write])
            if result.ok:
                created = result.outcome is WriteOutcome.CREATED or added
                return WriteReport(name.text, created, result.version)
            if result.outcome is WriteOutcome.EXISTS and not overwrite:
                raise HandleAlreadyExists("handle already exists", name.text)
        raise ServerError("too many concurrent writers on this handle; try again", name.text)

    async def _require_prefix_handle(self, name: HandleName) -> None:
        if normalise_prefix(name.prefix) == self.ns.node_prefix_norm:
            return
        if await self.ns.store.get(parse_handle(prefix_handle_of(name.prefix)).key) is None:
            raise NotResponsible(f"prefix {name.prefix} is not allocated on this node", name.text)

    def _replace_all(
        self,
        caller: Caller,
        name: HandleName,
        current: Record | None,
        values: Sequence[HandleValue],
        overwrite: bool,
    ) -> tuple[list[HandleValue], list[int], int]:
        if current is not None and not overwrite:
            raise HandleAlreadyExists("handle already exists", name.text)
        new_values = list(values)
        if current is None:
            if not any(v.type.upper() == "HS_ADMIN" for v in new_values):
                admin = self._default_admin(caller)
                if any(v.index == admin.index for v in new_values):
                    raise InvalidValue(
                        f"no HS_ADMIN given and index {admin.index}, where the default one goes, is taken",
                        name.text,
                    )
                new_values.append(admin)
            return new_values, [valuedata.ADD_HANDLE], MUST_NOT_EXIST
        if not any(v.type.upper() == "HS_ADMIN" for v in new_values):
            # A replacement without HS_ADMIN keeps the handle's administrators rather than orphaning it.
            taken = {v.index for v in new_values}
            kept = [v for v in current.values if v.type.upper() == "HS_ADMIN" and v.index not in taken]
            if not kept:
                admin = self._default_admin(caller)
                index = admin.index
                while index in taken:
                    index += 1
                kept = [replace(admin, index=index)]
            new_values.extend(kept)
        perms = perms_for_change(current.values, new_values)
        return new_values, perms, current.version

    def _merge(
        self,
        name: HandleName,
        current: Record,
        values: Sequence[HandleValue],
        indexes: Sequence[int],
        overwrite: bool,
    ) -> tuple[list[HandleValue], list[int]]:
        given = {v.index: v for v in values}
        wanted = list(given) if not indexes else list(indexes)
        missing = [i for i in wanted if i not in given]
        if missing:
            raise InvalidValue(f"no value in the body for index {missing[0]}", name.text)
        existing = {v.index: v for v in current.values}
        if not overwrite:
            clash = [i for i in wanted if i in existing]
            if clash:
                raise ValueAlreadyExists(f"a value at index {clash[0]} already exists", name.text)
        merged = dict(existing)
        for i in wanted:
            merged[i] = given[i]
        new_values = sorted(merged.values(), key=lambda v: v.index)
        return new_values, perms_for_change(current.values, new_values)

    async def delete(self, caller: Caller, name: HandleName, indexes: Sequence[int] | None = None) -> WriteReport:
        """Delete the handle, or only the values at ``indexes``."""
        caller.require_authenticated()
        self.ns.require_responsible(name)
        for _ in range(8):
            row = await self.ns.store.get(name.key)
            if row is None:
                raise HandleNotFound("handle not found", name.text)
            current = unpack_record(row.packed)
            if indexes:
                present = {v.index for v in current.values}
                absent = [i for i in indexes if i not in present]
                if absent:
                    raise ValuesNotFound(f"no value at index {absent[0]}", name.text)
                remaining = tuple(v for v in current.values if v.index not in set(indexes))
                perms = perms_for_change(current.values, remaining)
                values: tuple[HandleValue, ...] | None = remaining
            else:
                perms = [valuedata.DELETE_HANDLE]
                values = None
            await self._authorise(caller, name, current, perms)
            enterprise_id = await self._check_enterprise(caller, name)
            if name.key == self.ns.node_admin_key and values is None:
                raise PermissionDenied("the node's own prefix handle cannot be deleted", name.text)
            if name.is_prefix_handle and values is None and not caller.node_admin:
                raise PermissionDenied("only the node administrator deletes a prefix handle", name.text)
            write = HandleWrite(
                key=name.key,
                handle=current.handle,
                prefix=normalise_prefix(name.prefix),
                values=values,
                expect=current.version,
                enterprise_id=enterprise_id,
            )
            (result,) = await self.write_many([write])
            if result.ok:
                return WriteReport(name.text, False, result.version)
            if result.outcome is WriteOutcome.MISSING:
                raise HandleNotFound("handle not found", name.text)
        raise ServerError("too many concurrent writers on this handle; try again", name.text)

    async def write_many(
        self, writes: Sequence[HandleWrite], *, atomic: bool = True, now: int | None = None
    ) -> list[WriteResult]:
        """Apply already validated and authorised writes and notify listeners of those that were
        written. Every write of identifier data reaches the store here (single writes, batches,
        imports, auditors, bootstrap); an enterprise's prefix handle through :meth:`create_enterprise`."""
        now = self.ns.clock() if now is None else now
        results = await self.ns.store.write(writes, now=now, atomic=atomic)
        changed = [w.key for w, r in zip(writes, results, strict=True) if r.ok]
        if changed:
            await self.notify(changed)
        return results

    async def create_enterprise(
        self, name: str, uscc: str, prefix: str, promoter_id: int, write: HandleWrite, *, now: int
    ) -> Enterprise:
        """Record an enterprise and create its prefix handle (``write``) in one transaction."""
        enterprise = await self.ns.store.add_enterprise(name, uscc, prefix, promoter_id, write, now=now)
        await self.notify([write.key])
        return enterprise

    async def add_gs1_prefix(self, enterprise_id: int, company_prefix: str, *, limit: int) -> tuple[Gs1Prefix, bool]:
        """Record an enterprise's GS1 company prefix (checked by :mod:`registry.gs1_prefixes`). No
        record changes, so listeners hear nothing; resolution reads the table on every scan."""
        return await self.ns.store.add_gs1_prefix(enterprise_id, company_prefix, now=self.ns.clock(), limit=limit)

    async def remove_gs1_prefix(self, enterprise_id: int, company_prefix: str) -> bool:
        return await self.ns.store.remove_gs1_prefix(enterprise_id, company_prefix)


def perms_for_change(old: Sequence[HandleValue], new: Sequence[HandleValue]) -> list[int]:
    """The HS_ADMIN rights a change from ``old`` to ``new`` values needs (HANDLE.NET semantics)."""
    before = {v.index: v for v in old}
    after = {v.index: v for v in new}
    needed: set[int] = set()
    for index, v in after.items():
        is_admin = v.type.upper() == "HS_ADMIN"
        prev = before.get(index)
        if prev is None:
            needed.add(valuedata.ADD_ADMIN if is_admin else valuedata.ADD_VALUE)
        elif (prev.type, prev.data, prev.ttl, prev.ttl_absolute, prev.permissions, prev.references) != (
            v.type,
            v.data,
            v.ttl,
            v.ttl_absolute,
            v.permissions,
            v.references,
        ):
            was_admin = prev.type.upper() == "HS_ADMIN"
            needed.add(valuedata.MODIFY_ADMIN if (is_admin or was_admin) else valuedata.MODIFY_VALUE)
    for index, prev in before.items():
        if index not in after:
            needed.add(valuedata.REMOVE_ADMIN if prev.type.upper() == "HS_ADMIN" else valuedata.REMOVE_VALUE)
    return sorted(needed)
