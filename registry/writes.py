"""The write service: the only code that changes identifier data.

Every change is planned by :mod:`registry.write_plan` (pure), authorised here against the records
it touches, committed through the store's one ``write`` (private to this class) and then published
to the subscribers as a :class:`~registry.write_events.Commit` (cache invalidation, metrics). The
ways in:

- :meth:`WriteService.put_handle` and :meth:`WriteService.delete`: one handle on a caller's behalf
  (REST, the bureau's identities);
- :meth:`WriteService.plan_batch` (a :class:`BatchPlanner`: items planned as they stream in) then
  :meth:`WriteService.apply`: a batch (HTTP, ``idnode import``); a plan is applied only by the
  service that made it;
- :meth:`WriteService.create_writer` (a :class:`~registry.write_stream.CreateWriter`): the new
  handles of a batch, written in one transaction while the batch is still being read;
- :meth:`WriteService.write_node_prefix_handle`: the node's own prefix handle (bootstrap);
- :meth:`WriteService.create_enterprise`: an enterprise and its prefix handle (onboarding).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from registry import valuedata
from registry.admin_values import hash_secrets
from registry.auth import Caller, Identity, has_right
from registry.errors import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    InvalidRequest,
    NotResponsible,
    PermissionDenied,
    ServerError,
)
from registry.model import NA_PREFIX, HandleName, HandleValue, Record, normalise_prefix, parse_handle, prefix_handle_of
from registry.namespace import Namespace
from registry.packing import unpack_record
from registry.secretkeys import SecretHasher
from registry.stores.base import (
    AuditRecord,
    CreateStream,
    Enterprise,
    Gs1Prefix,
    HandleWrite,
    WriteOutcome,
    WriteResult,
)
from registry.templates import TEMPLATE_INDEX
from registry.templates_service import TemplateService
from registry.write_events import Commit, Subscriber
from registry.write_plan import Change, Mode, PlanContext, WritePlan, WriteRequest, plan_write
from registry.write_stream import CreateWriter

__all__ = ["BatchPlan", "BatchPlanner", "WriteReport", "WriteService"]

_READ_CHUNK = 5000  # records read per store call when a batch needs the current ones


@dataclass(frozen=True, slots=True)
class WriteReport:
    handle: str
    created: bool
    version: int


class BatchPlan:
    """A batch as a :class:`BatchPlanner` planned and authorised it. Per item it took: in
    ``refusals`` the error that refuses it at the end (else None), in ``planned`` the store write it
    became (else None). Only the service that made it applies it, once."""

    __slots__ = ("_seal", "_writes", "atomic", "failed", "planned", "refusals")

    def __init__(
        self,
        refusals: list[HandleError | None],
        planned: list[HandleWrite | None],
        *,
        atomic: bool,
        failed: bool,
        seal: object,
    ) -> None:
        self.refusals = refusals
        self.planned = planned
        self.atomic = atomic
        self._writes = [w for w in planned if w is not None]
        self.failed = failed or len(self._writes) != len(planned)  # any item of the batch refused
        self._seal = seal


class WriteService:
    """Plans, authorises and applies every change; publishes what each commit changed."""

    def __init__(self, ns: Namespace, hasher: SecretHasher, templates: TemplateService) -> None:
        self.ns = ns
        self.hasher = hasher
        self.templates = templates
        self._subscribers: list[Subscriber] = []
        self._seal = object()  # what a BatchPlan of this service carries

    # -- events ----------------------------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber`` after every commit, in the order of subscription; writes are
        acknowledged only once every subscriber has returned."""
        self._subscribers.append(subscriber)

    async def _commit(
        self,
        writes: Sequence[HandleWrite],
        *,
        atomic: bool = True,
        now: int | None = None,
        audit: AuditRecord | None = None,
    ) -> list[WriteResult]:
        """The one call of ``store.write``; then the subscribers hear what changed. ``audit``: the
        administrative change these writes make, stored in their transaction (registry.audit)."""
        now = self.ns.clock() if now is None else now
        results = await self.ns.store.write(writes, now=now, atomic=atomic, audit=audit)
        await self._publish(Commit(writes, results))
        return results

    async def _publish(self, commit: Commit) -> None:
        if commit:
            for subscriber in self._subscribers:
                await subscriber(commit)

    def context(
        self, caller: Caller, *, now: int | None = None, default_admin: HandleValue | None = None
    ) -> PlanContext:
        """What plans for ``caller`` are made in: now (or ``now``), under this node's limits."""
        return PlanContext(
            caller=caller,
            now=self.ns.clock() if now is None else now,
            max_values=self.ns.settings.value_limits.max_values,
            node_admin_key=self.ns.node_admin_key,
            default_admin=default_admin,
        )

    # -- rights ----------------------------------------------------------------------------------
    @staticmethod
    def require_writer(caller: Caller) -> Identity:
        """The caller's identity, unless it may write nothing at all (anonymous, the auditor)."""
        identity = caller.require_authenticated()
        if caller.role == "auditor":
            raise PermissionDenied("the auditor identity cannot write")
        return identity

    async def _prefix_record(self, name: HandleName) -> Record | None:
        prefix = name.suffix if name.is_prefix_handle else name.prefix
        if name.is_prefix_handle:
            # The admin of 0.NA/88.118.8.1001 is found on its parent prefix handle.
            prefix = prefix.rsplit(".", 1)[0] if "." in prefix else prefix
        return await self.ns.read_record(parse_handle(prefix_handle_of(prefix)).key)

    async def _authorise(self, caller: Caller, name: HandleName, current: Record | None, perms: Sequence[int]) -> None:
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
        await self._authorise_perms(identity, name, prefix_record if current is None else current, perms)

    async def _authorise_perms(
        self, identity: Identity, name: HandleName, target: Record | None, perms: Sequence[int]
    ) -> None:
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

    async def _require_prefix_handle(self, name: HandleName) -> None:
        if normalise_prefix(name.prefix) == self.ns.node_prefix_norm:
            return
        if await self.ns.store.get(parse_handle(prefix_handle_of(name.prefix)).key) is None:
            raise NotResponsible(f"prefix {name.prefix} is not allocated on this node", name.text)

    async def check_create(self, caller: Caller, name: HandleName) -> int | None:
        """Raise unless ``caller`` may create handles under the prefix of ``name`` (the prefix is
        this node's and allocated, the caller holds ADD_HANDLE on it, its enterprise is active).
        Returns the enterprise's id (None under the node prefix). What depends on the prefix alone:
        a batch asks once per prefix."""
        if normalise_prefix(name.prefix) != name.key.partition("/")[0]:
            raise InvalidRequest("the handle's key does not match its prefix", name.text)
        self.ns.require_responsible(name)
        await self._authorise(caller, name, None, (valuedata.ADD_HANDLE,))
        enterprise = await self._check_enterprise(caller, name)
        await self._require_prefix_handle(name)
        return enterprise

    # -- one handle --------------------------------------------------------------------------------
    async def put_handle(
        self,
        caller: Caller,
        name: HandleName,
        values: Sequence[HandleValue],
        *,
        overwrite: bool = True,
        indexes: Sequence[int] | None = None,
        mint: bool = False,
        audit: AuditRecord | None = None,
    ) -> WriteReport:
        """Create or replace a handle (``indexes`` None), or add/replace only the given values.
        ``audit``: the administrative change this is (a secret reset), stored in its transaction."""
        self.require_writer(caller)
        if mint:
            name = self.ns.parse(name.text + uuid.uuid4().hex)
        self.ns.require_responsible(name)
        hashed = tuple(await hash_secrets(self.hasher, values))  # once, before the compare-and-set retries
        if indexes is None:
            request = WriteRequest(name, Mode.REPLACE if overwrite else Mode.CREATE, hashed)
        else:
            request = WriteRequest(name, Mode.MERGE, hashed, tuple(indexes), keep_existing=not overwrite)
        plan, result = await self._write_one(caller, request, audit)
        return WriteReport(name.text, plan.change is Change.CREATED or plan.new_index, result.version)

    async def delete(self, caller: Caller, name: HandleName, indexes: Sequence[int] | None = None) -> WriteReport:
        """Delete the handle, or only the values at ``indexes``."""
        self.require_writer(caller)
        self.ns.require_responsible(name)
        mode = Mode.DELETE_VALUES if indexes else Mode.DELETE
        _, result = await self._write_one(caller, WriteRequest(name, mode, indexes=tuple(indexes or ())))
        return WriteReport(name.text, False, result.version)

    async def _write_one(
        self, caller: Caller, request: WriteRequest, audit: AuditRecord | None = None
    ) -> tuple[WritePlan, WriteResult]:
        """Read, plan, authorise and commit; again (compare-and-set) when another writer won."""
        name = request.name
        for _ in range(8):
            row = await self.ns.store.get(name.key)
            current = unpack_record(row.packed) if row else None
            plan = plan_write(current, request, self.context(caller))
            await self._authorise(caller, name, current, plan.perms)
            enterprise_id = await self._check_enterprise(caller, name)
            if plan.values is not None and request.mode is not Mode.DELETE_VALUES:
                await self.templates.check_template(name, plan.values, request.where)
            if current is None and not name.is_prefix_handle:
                await self._require_prefix_handle(name)
            (result,) = await self._commit([plan.write(enterprise_id)], audit=audit)
            if result.ok:
                return plan, result
            if result.outcome is WriteOutcome.EXISTS and request.mode is Mode.CREATE:
                raise HandleAlreadyExists("handle already exists", name.text)
            if result.outcome is WriteOutcome.MISSING and plan.values is None:
                raise HandleNotFound("handle not found", name.text)
        raise ServerError("too many concurrent writers on this handle; try again", name.text)

    # -- batches -------------------------------------------------------------------------------------
    def plan_batch(
        self, caller: Caller, *, now: int | None = None, default_admin: HandleValue | None = None
    ) -> BatchPlanner:
        """A planner for a batch of ``caller``'s: items are planned as they arrive
        (:meth:`BatchPlanner.add`), the plan is made at the end (:meth:`BatchPlanner.finish`) and
        committed by :meth:`apply`. ``now``: the time the values are stamped with; ``default_admin``:
        the HS_ADMIN of new handles without one (default: the caller's)."""
        self.require_writer(caller)
        ctx = self.context(caller, now=now, default_admin=default_admin)
        return BatchPlanner(self, replace(ctx, default_admin=ctx.admin()), self._seal)

    def create_writer(self, *, atomic: bool, now: int) -> CreateWriter:
        """A writer for the new handles of a batch planned by :meth:`plan_batch` (with
        :meth:`BatchPlanner.plan_new`): rows are written while the batch is read, in one transaction
        opened here (``atomic``: all or none), and the commit is published as any other."""

        async def open_stream() -> CreateStream:
            return await self.ns.store.create_stream(now=now, atomic=atomic)

        return CreateWriter(open_stream, self.ns.store.exists_many, self._publish)

    async def _records(self, keys: Sequence[str]) -> Mapping[str, Record]:
        out: dict[str, Record] = {}
        for start in range(0, len(keys), _READ_CHUNK):
            rows = await self.ns.store.get_many(keys[start : start + _READ_CHUNK])
            out.update({k: unpack_record(r.packed) for k, r in rows.items()})
        return out

    async def apply(self, plan: BatchPlan) -> list[WriteResult | None]:
        """Commit a plan of :meth:`plan_batch`: per request its result, None for those refused (or
        all None when an atomic plan refused any: nothing is written)."""
        if plan._seal is not self._seal:
            raise ServerError("a batch plan is applied only by the write service that made it, once")
        plan._seal = None
        if not plan._writes or (plan.atomic and plan.failed):
            return [None] * len(plan.planned)
        results = iter(await self._commit(plan._writes, atomic=plan.atomic))
        return [None if write is None else next(results) for write in plan.planned]

    # -- the node's own prefix handle; enterprises ---------------------------------------------------
    async def write_node_prefix_handle(
        self,
        values: tuple[HandleValue, ...],
        *,
        expect: int,
        now: int | None = None,
        audit: AuditRecord | None = None,
    ) -> WriteResult:
        """Create (``expect`` MUST_NOT_EXIST) or rewrite (``expect`` the version read) the node's own
        prefix handle, which defines the node administrator: written by the node itself at start-up
        (HS_ADMIN, secret key, HS_SITE) and for its report key, not on a caller's behalf. ``audit``:
        the administrative change it makes (a secret reset), stored in its transaction."""
        write = HandleWrite(self.ns.node_admin_key, self.ns.node_admin_handle, "0.NA", values, expect)
        (result,) = await self._commit([write], now=now, audit=audit)
        return result

    async def create_enterprise(
        self,
        name: str,
        uscc: str,
        prefix: str,
        promoter_id: int,
        write: HandleWrite,
        *,
        now: int,
        audit: AuditRecord | None = None,
    ) -> Enterprise:
        """Record an enterprise and create its prefix handle (``write``) in one transaction (with ``audit``)."""
        if not write.key.startswith(f"0.NA/{self.ns.node_prefix_norm}."):
            raise ServerError(f"an enterprise prefix handle lies under the node prefix, not {write.handle}")
        enterprise = await self.ns.store.add_enterprise(name, uscc, prefix, promoter_id, write, now=now, audit=audit)
        await self._publish(Commit([write], [WriteResult(WriteOutcome.CREATED)]))
        return enterprise

    async def add_gs1_prefix(self, enterprise_id: int, company_prefix: str, *, limit: int) -> tuple[Gs1Prefix, bool]:
        """Record an enterprise's GS1 company prefix (checked by :mod:`registry.gs1_prefixes`). No
        record changes, so listeners hear nothing; resolution reads the table on every scan."""
        return await self.ns.store.add_gs1_prefix(enterprise_id, company_prefix, now=self.ns.clock(), limit=limit)

    async def remove_gs1_prefix(self, enterprise_id: int, company_prefix: str) -> bool:
        return await self.ns.store.remove_gs1_prefix(enterprise_id, company_prefix)


class BatchPlanner:
    """Plans one batch as it streams in, for :meth:`WriteService.apply`. Per item, as it arrives:
    the prefix's checks (:meth:`WriteService.check_create`, once per prefix), the template, the
    secret keys hashed, and a new handle planned at once (:func:`plan_write`); only the store write
    is kept. Replacements are planned at the end, on the records as they are then."""

    def __init__(self, writes: WriteService, ctx: PlanContext, seal: object) -> None:
        self._writes = writes
        self._ctx = ctx
        self._identity = ctx.caller.require_authenticated()
        self._seal = seal
        self._prefixes: dict[str, int | HandleError | None] = {}  # prefix → enterprise id, or the refusal
        self._planned: list[HandleWrite | WriteRequest] = []  # per item taken: its write, or the replacement

    async def add(self, request: WriteRequest, position: int | None = None) -> HandleError | None:
        """Take one item (CREATE or REPLACE), or return the error that refuses it. ``position``:
        the item's number in the batch, for messages."""
        try:
            self._planned.append(await self._plan(request, position))
        except HandleError as exc:
            if exc.handle is None:
                exc.handle = request.name.text
            return exc
        return None

    async def plan_new(self, request: WriteRequest, position: int | None = None) -> HandleWrite:
        """The store write of one CREATE item, planned now and not kept (the caller writes it with
        :meth:`WriteService.create_writer`); raises the HandleError that refuses it."""
        try:
            planned = await self._plan(request, position)
        except HandleError as exc:
            if exc.handle is None:
                exc.handle = request.name.text
            raise
        if type(planned) is not HandleWrite:
            raise InvalidRequest("a streamed batch only creates handles")
        return planned

    @property
    def admin(self) -> HandleValue:
        """The HS_ADMIN new handles of this batch get when they bring none."""
        return self._ctx.admin()

    def enterprise_of(self, prefix: str) -> int | None:
        """The enterprise id of a normalised prefix this planner has accepted items under."""
        known = self._prefixes.get(prefix)
        return known if isinstance(known, int) else None

    async def _plan(self, request: WriteRequest, position: int | None) -> HandleWrite | WriteRequest:
        writes, name = self._writes, request.name
        mode = request.mode
        if mode is not Mode.CREATE and mode is not Mode.REPLACE:
            raise InvalidRequest("a batch creates or replaces handles")
        prefix = name.key.partition("/")[0]
        if prefix == NA_PREFIX:
            raise InvalidRequest("prefix handles are created by onboarding an enterprise, not in a batch")
        known = self._prefixes.get(prefix, ...)
        if known is ...:
            try:
                known = await writes.check_create(self._ctx.caller, name)
            except HandleError as exc:
                known = exc
            self._prefixes[prefix] = known
        if isinstance(known, HandleError):
            raise type(known)(known.message, name.text, code=known.code)
        for v in request.values:
            if v.index == TEMPLATE_INDEX:
                where = request.where if position is None else f"item {position}"
                await writes.templates.check_template(name, request.values, where)
                break
        # Plain-text secret keys are hashed in the scrypt pool: the loop stays free.
        values = await hash_secrets(writes.hasher, request.values)
        if values is not request.values:
            request = WriteRequest(name, mode, tuple(values), where=request.where)
        if mode is Mode.CREATE:
            o = plan_write(None, request, self._ctx)
            return HandleWrite(o.key, o.handle, o.prefix, o.values, o.expect, known)
        return request

    async def finish(self, *, atomic: bool = True, failed: bool = False) -> BatchPlan:
        """The plan of the items taken. ``failed``: items were refused (here or by the caller): an
        atomic batch then writes nothing, but the items that exist are still reported as such."""
        items, self._planned = self._planned, []
        refusals: list[HandleError | None] = [None] * len(items)
        planned: list[HandleWrite | None] = [None] * len(items)
        replacing = False
        for i, item in enumerate(items):
            if type(item) is HandleWrite:
                planned[i] = item
            else:
                replacing = True
        # Replacing needs each record's own HS_ADMIN; an atomic failure must still list the 101s.
        if replacing or (atomic and failed):
            writes, ctx = self._writes, self._ctx
            existing = await writes._records([i.key if isinstance(i, HandleWrite) else i.name.key for i in items])
            for i, item in enumerate(items):
                try:
                    if isinstance(item, HandleWrite):  # a new handle, planned already
                        if item.key in existing:
                            raise HandleAlreadyExists("handle already exists", item.handle)
                        continue
                    current = existing.get(item.name.key)
                    o = plan_write(current, item, ctx)
                    if current is not None and not ctx.caller.node_admin:
                        await writes._authorise_perms(self._identity, item.name, current, o.perms)
                    enterprise = self._prefixes[o.prefix]  # an int or None: refused prefixes took no item
                    eid = enterprise if isinstance(enterprise, int) else None
                    planned[i] = HandleWrite(o.key, o.handle, o.prefix, o.values, o.expect, eid)
                except HandleError as exc:
                    refusals[i], planned[i] = exc, None
        return BatchPlan(refusals, planned, atomic=atomic, failed=failed, seal=self._seal)
