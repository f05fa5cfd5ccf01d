"""The write planner: what one change of a handle is, decided without I/O.

:func:`plan_write` takes the record as it is now (or None), a :class:`WriteRequest` and the
:class:`PlanContext` (who asks, when, under which node limits) and returns the :class:`WritePlan`:
the values the record will hold (the caller's default HS_ADMIN on a new handle, the record's
administrators kept on a replacement, every value stamped with the write time), the HS_ADMIN
rights the change needs, and what it moves (created, replaced or deleted) — or refuses it with the
Handle error a client gets. Single ``PUT``, ``index=`` writes, ``DELETE``, batches and ``idnode
import`` are all planned here; :class:`registry.writes.WriteService` reads the record, checks the
rights the plan names and commits it.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from registry import valuedata
from registry.admin_values import ADMIN_INDEX, default_admin
from registry.auth import Caller
from registry.errors import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    InvalidValue,
    PermissionDenied,
    ValueAlreadyExists,
    ValuesNotFound,
)
from registry.model import NA_PREFIX, HandleName, HandleValue, Record
from registry.secretkeys import is_hashed
from registry.stores.base import MUST_NOT_EXIST, HandleWrite

__all__ = [
    "Change",
    "Mode",
    "PlanContext",
    "WritePlan",
    "WriteRequest",
    "perms_for_change",
    "plan_write",
    "prepare_values",
]


class Mode(enum.Enum):
    """What a request asks for."""

    CREATE = "create"  # a new handle; refused if it exists (PUT overwrite=false, a batch)
    REPLACE = "replace"  # a new handle, or all values of an existing one (PUT, a batch with overwrite)
    MERGE = "merge"  # add or replace the values at some indexes of an existing handle (PUT index=)
    DELETE = "delete"  # the whole handle
    DELETE_VALUES = "delete_values"  # the values at some indexes (DELETE index=)


class Change(enum.Enum):
    """What a write does to a handle: the kind of a write event."""

    CREATED = "created"
    REPLACED = "replaced"
    DELETED = "deleted"


@dataclass(slots=True)
class WriteRequest:
    """One change asked for. ``values``: plain-text HS_SECKEY values hashed already
    (:func:`registry.admin_values.hash_secrets`). ``indexes``: for MERGE the indexes taken from
    ``values`` (empty: every value given), for DELETE_VALUES those removed. ``keep_existing``: a
    MERGE refuses an index that holds a value already. ``where`` names the values in messages."""

    name: HandleName
    mode: Mode
    values: tuple[HandleValue, ...] = ()
    indexes: tuple[int, ...] = ()
    keep_existing: bool = False
    where: str = "values"


@dataclass(frozen=True, slots=True)
class PlanContext:
    """Who asks and what the node decides for every plan of theirs: the write time, the value-count
    limit, the node's own prefix handle, and the HS_ADMIN a new handle without one gets (None: the
    caller's own, at index 100). A batch is planned in one context."""

    caller: Caller
    now: int
    max_values: int
    node_admin_key: str
    default_admin: HandleValue | None = None

    @property
    def admin_index(self) -> int:
        return self.default_admin.index if self.default_admin is not None else ADMIN_INDEX

    def admin(self) -> HandleValue:
        """The default HS_ADMIN, stamped with the write time."""
        admin = self.default_admin
        if admin is None:
            return default_admin(self.caller, self.now)
        return admin if admin.timestamp == self.now else replace(admin, timestamp=self.now)


class WritePlan(NamedTuple):
    """The write one request becomes (a named tuple: a batch makes 100,000 of them). ``perms``:
    the HS_ADMIN rights it needs — on the record, or for a new handle ADD_HANDLE on its prefix
    handle. ``new_index``: a MERGE that added a value at an index the handle did not use (a PUT
    answers 201). ``registrations``: how the prefix's registration counter moves (+1 created, -1
    deleted)."""

    key: str
    handle: str
    prefix: str  # normalised
    values: tuple[HandleValue, ...] | None  # None deletes
    expect: int  # MUST_NOT_EXIST or the version the plan was made from
    perms: tuple[int, ...]
    change: Change
    new_index: bool = False

    @property
    def registrations(self) -> int:
        return 1 if self.change is Change.CREATED else -1 if self.change is Change.DELETED else 0

    def write(self, enterprise_id: int | None) -> HandleWrite:
        return HandleWrite(self.key, self.handle, self.prefix, self.values, self.expect, enterprise_id)


_CREATE_PERMS = (valuedata.ADD_HANDLE,)
_DELETE_PERMS = (valuedata.DELETE_HANDLE,)


def plan_write(current: Record | None, request: WriteRequest, ctx: PlanContext) -> WritePlan:
    """The plan for ``request`` on ``current`` (None: the handle does not exist), or the HandleError
    a client gets. Pure: the same inputs always give the same plan."""
    name = request.name
    mode = request.mode
    if mode is Mode.DELETE or mode is Mode.DELETE_VALUES:
        return _plan_delete(current, request, ctx)
    if current is None:
        if mode is Mode.MERGE:
            raise HandleNotFound("handle not found", name.text)
        key = name.key
        prefix = sys.intern(key.partition("/")[0])  # one string per prefix, not per handle of a batch
        if prefix == NA_PREFIX and not ctx.caller.node_admin:
            raise PermissionDenied("only the node administrator creates prefixes", name.text)
        index = ctx.admin_index
        values, admin, taken = _prepared(request.values, ctx.now, index)
        if not admin:  # a new handle without HS_ADMIN gets the default one, which must find its index free
            if taken:
                raise InvalidValue(
                    f"no HS_ADMIN given and index {index}, where the default one goes, is taken", name.text
                )
            values = (*values, ctx.admin())
        if len(values) > ctx.max_values:
            raise _too_many(ctx, name)
        return WritePlan(key, name.text, prefix, values, MUST_NOT_EXIST, _CREATE_PERMS, Change.CREATED)
    if mode is Mode.CREATE:
        raise HandleAlreadyExists("handle already exists", name.text)
    new_index = False
    if mode is Mode.MERGE:
        merged = _merge(current, prepare_values(request.values, ctx.now), request)
        new_index = len(merged) > len(current.values)
        values = _stamped(merged, ctx.now)  # the values kept are written again at this time
    else:
        values = _keeping_admins(prepare_values(request.values, ctx.now), current, ctx)
    if len(values) > ctx.max_values:
        raise _too_many(ctx, name)
    perms = tuple(perms_for_change(current.values, values))
    prefix = sys.intern(name.key.partition("/")[0])
    return WritePlan(name.key, current.handle, prefix, values, current.version, perms, Change.REPLACED, new_index)


def _plan_delete(current: Record | None, request: WriteRequest, ctx: PlanContext) -> WritePlan:
    name = request.name
    if current is None:
        raise HandleNotFound("handle not found", name.text)
    prefix = name.key.partition("/")[0]
    if request.mode is Mode.DELETE_VALUES:
        present = {v.index for v in current.values}
        absent = [i for i in request.indexes if i not in present]
        if absent:
            raise ValuesNotFound(f"no value at index {absent[0]}", name.text)
        gone = set(request.indexes)
        remaining = tuple(v for v in current.values if v.index not in gone)
        perms = tuple(perms_for_change(current.values, remaining))
        return WritePlan(name.key, current.handle, prefix, remaining, current.version, perms, Change.REPLACED)
    if name.key == ctx.node_admin_key:
        raise PermissionDenied("the node's own prefix handle cannot be deleted", name.text)
    if name.is_prefix_handle and not ctx.caller.node_admin:
        raise PermissionDenied("only the node administrator deletes a prefix handle", name.text)
    return WritePlan(name.key, current.handle, prefix, None, current.version, _DELETE_PERMS, Change.DELETED)


def prepare_values(values: Sequence[HandleValue], now: int) -> tuple[HandleValue, ...]:
    """``values`` stamped with the write time, once their data is checked: HS_SECKEY must be hashed
    already (one that is not is refused rather than stored in clear), HS_ADMIN must decode."""
    return _prepared(values, now, -1)[0]


def _prepared(values: Sequence[HandleValue], now: int, index: int) -> tuple[tuple[HandleValue, ...], bool, bool]:
    """(:func:`prepare_values`, whether one is an HS_ADMIN, whether one is at ``index``)."""
    admin = taken = restamp = False
    for v in values:
        kind = v.type.upper()
        if kind == "HS_SECKEY":
            if not is_hashed(v.data.decode("utf-8", "replace")):
                raise InvalidValue(f"HS_SECKEY at index {v.index} was not hashed")
        elif kind == "HS_ADMIN":
            admin = True
            try:
                valuedata.decode_admin(v.data)
            except (ValueError, HandleError) as exc:
                raise InvalidValue(f"HS_ADMIN at index {v.index}: {exc}") from None
        if v.index == index:
            taken = True
        if v.timestamp != now:
            restamp = True
    return (_stamped(values, now) if restamp else tuple(values)), admin, taken


def _stamped(values: Sequence[HandleValue], now: int) -> tuple[HandleValue, ...]:
    return tuple(v if v.timestamp == now else replace(v, timestamp=now) for v in values)


def _too_many(ctx: PlanContext, name: HandleName) -> InvalidValue:
    return InvalidValue(f"a handle may hold at most {ctx.max_values} values", name.text)


def _keeping_admins(values: tuple[HandleValue, ...], current: Record, ctx: PlanContext) -> tuple[HandleValue, ...]:
    """A replacement without HS_ADMIN keeps the record's administrators rather than orphaning it;
    a record that had none gets the default one at the first free index from 100."""
    if any(v.type.upper() == "HS_ADMIN" for v in values):
        return values
    taken = {v.index for v in values}
    kept = [v for v in current.values if v.type.upper() == "HS_ADMIN" and v.index not in taken]
    if not kept:
        admin = ctx.admin()
        index = admin.index
        while index in taken:
            index += 1
        kept = [replace(admin, index=index)]
    return (*values, *_stamped(kept, ctx.now))


def _merge(current: Record, values: tuple[HandleValue, ...], request: WriteRequest) -> list[HandleValue]:
    """The record's values with those at the requested indexes added or replaced, by index."""
    name = request.name
    given = {v.index: v for v in values}
    wanted = list(given) if not request.indexes else list(request.indexes)
    missing = [i for i in wanted if i not in given]
    if missing:
        raise InvalidValue(f"no value in the body for index {missing[0]}", name.text)
    existing = {v.index: v for v in current.values}
    if request.keep_existing:
        clash = [i for i in wanted if i in existing]
        if clash:
            raise ValueAlreadyExists(f"a value at index {clash[0]} already exists", name.text)
    merged = dict(existing)
    for i in wanted:
        merged[i] = given[i]
    return sorted(merged.values(), key=lambda v: v.index)


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
