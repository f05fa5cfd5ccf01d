"""The write service: the only code that changes identifier data.

Single writes, batches, CLI imports and enterprise onboarding all come through :class:`Registry`, so
validation, authorisation, counting and cache invalidation are the same on every path.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from registry import valuedata
from registry.auth import Caller, Identity, SecretKeyAuthenticator, has_right
from registry.errors import (
    HandleAlreadyExists,
    HandleError,
    HandleNotFound,
    InvalidHandle,
    InvalidRequest,
    InvalidValue,
    NotResponsible,
    PermissionDenied,
    ServerError,
    ValueAlreadyExists,
    ValuesNotFound,
)
from registry.inputs import as_uint, is_uint_text
from registry.jsonvalues import ValueLimits
from registry.model import (
    ADMIN_READ,
    ADMIN_WRITE,
    HandleName,
    HandleValue,
    Record,
    Reference,
    normalise_prefix,
    parse_handle,
    prefix_handle_of,
)
from registry.packing import unpack_record
from registry.secretkeys import SecretHasher, check_client_hash, generate_secret, is_hashed
from registry.stores.base import (
    MUST_NOT_EXIST,
    Enterprise,
    HandleStore,
    HandleWrite,
    Promoter,
    WriteOutcome,
    WriteResult,
)
from registry.templates import (
    TEMPLATE_INDEX,
    TEMPLATE_TYPE,
    Template,
    is_template_id,
    parse_template_ref,
    template_from_json,
    validate_against,
)
from registry.uscc import InvalidUSCC, normalize_uscc

__all__ = ["ChangeListener", "NodeSettings", "Registry", "WriteReport"]

ADMIN_INDEX = 100
ADMIN_GROUP_INDEX = 200  # HS_VLIST of the prefix's administrators, as HANDLE.NET lays prefixes out
SECKEY_INDEX = 300
SITE_INDEX = 1
FIRST_ENTERPRISE_NUMBER = 1001
TEMPLATE_FALLBACK_TTL = 10.0  # seconds a node-wide template stands in for an enterprise's own
# What an enterprise admin may do on its own prefix handle and on the handles it creates.
ENTERPRISE_PERMS = valuedata.ALL_PERMS & ~(valuedata.ADD_DERIVED_PREFIX | valuedata.DELETE_DERIVED_PREFIX)
DEFAULT_HANDLE_ADMIN_PERMS = ENTERPRISE_PERMS
ChangeListener = Callable[[Sequence[str]], Awaitable[None]]


@dataclass(frozen=True)
class NodeSettings:
    prefix: str = "88.118.8"
    max_handle_length: int = 255
    case_sensitive_suffix: bool = True
    value_limits: ValueLimits = field(default_factory=ValueLimits)
    scrypt_threads: int = 1  # threads hashing and checking secret keys (off the event loop)
    scrypt_max_jobs: int = 16  # scrypt jobs queued or running; more credential checks are "busy"
    auth_cache_ttl: float = 300.0  # seconds a successful secret-key check is remembered


@dataclass(frozen=True, slots=True)
class WriteReport:
    handle: str
    created: bool
    version: int


def _now() -> int:
    return int(time.time())


class Registry:
    """Validates, authorises and applies every change; notifies listeners after each commit."""

    def __init__(
        self, store: HandleStore, settings: NodeSettings | None = None, *, clock: Callable[[], int] = _now
    ) -> None:
        self.store = store
        self.settings = settings or NodeSettings()
        self.node_prefix = self.settings.prefix
        self._node_prefix_norm = normalise_prefix(self.node_prefix)
        self.node_admin_handle = prefix_handle_of(self.node_prefix)
        self._node_admin_key = parse_handle(self.node_admin_handle).key
        self.clock = clock
        self.hasher = SecretHasher(self.settings.scrypt_threads, self.settings.scrypt_max_jobs)
        self.authenticator = SecretKeyAuthenticator(self.read_record, self.hasher, ttl=self.settings.auth_cache_ttl)
        self._listeners: list[ChangeListener] = []
        self._names: dict[str, HandleName] = {}
        self._enterprise_lock = asyncio.Lock()
        self._templates: dict[tuple[str, str, int], tuple[Template, float]] = {}

    # -- reading -------------------------------------------------------------------------------
    def parse(self, text: str) -> HandleName:
        """Parse with the node's rules. Hot handles are parsed once: names are immutable, so the
        few thousand most recent ones are kept (bad input is never cached, it raises)."""
        name = self._names.get(text)
        if name is None:
            name = parse_handle(
                text,
                max_length=self.settings.max_handle_length,
                case_sensitive_suffix=self.settings.case_sensitive_suffix,
            )
            if len(self._names) >= 4096:
                self._names.clear()
            self._names[text] = name
        return name

    async def read_record(self, key: str) -> Record | None:
        """The record as the store has it now (authoritative, no cache)."""
        row = await self.store.get(key)
        return unpack_record(row.packed) if row else None

    def is_responsible(self, name: HandleName) -> bool:
        """Is the handle in this node's namespace (its prefix, or a prefix derived from it)?"""
        prefix = normalise_prefix(name.suffix) if name.is_prefix_handle else normalise_prefix(name.prefix)
        node = self._node_prefix_norm
        return prefix == node or prefix.startswith(node + ".")

    def require_responsible(self, name: HandleName) -> None:
        if not self.is_responsible(name):
            raise NotResponsible(f"this node is not responsible for {name.text}", name.text)

    # -- listeners (cache invalidation) --------------------------------------------------------
    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def _changed(self, keys: Sequence[str]) -> None:
        for listener in self._listeners:
            await listener(keys)

    def close(self) -> None:
        """Stop the scrypt threads (jobs not started yet are dropped)."""
        self.hasher.close()

    # -- callers -------------------------------------------------------------------------------
    async def caller_for(self, identity: Identity | str, secret: str, *, source: str | None = None) -> Caller:
        """The caller proven by ``secret`` (InvalidCredential when wrong, ServerBusy when the scrypt
        pool is full; ``source`` is the client address, so one address cannot take every slot)."""
        checked = await self.authenticator.authenticate(identity, secret, source=source)
        return await self.caller_of(checked)

    async def caller_of(self, identity: Identity) -> Caller:
        node_record = await self.read_record(self._node_admin_key)
        node_admin = await has_right(identity, node_record, valuedata.ALL_PERMS, self.read_record)
        role = await self.store.get_meta(f"role:{identity.key}:{identity.index}")
        return Caller(identity=identity, node_admin=node_admin, role=role)

    async def may_read_private(self, caller: Caller, record: Record) -> bool:
        """Non-public values are for node admins and identities with READ_VALUE on the handle."""
        if caller.identity is None:
            return False
        if caller.node_admin:
            return True
        return await has_right(caller.identity, record, valuedata.READ_VALUE, self.read_record)

    async def _prefix_record(self, name: HandleName) -> Record | None:
        prefix = name.suffix if name.is_prefix_handle else name.prefix
        if name.is_prefix_handle:
            # The admin of 0.NA/88.118.8.1001 is found on its parent prefix handle.
            parent = prefix.rsplit(".", 1)[0] if "." in prefix else prefix
            return await self.read_record(parse_handle(prefix_handle_of(parent)).key)
        return await self.read_record(parse_handle(prefix_handle_of(prefix)).key)

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
        if not await has_right(identity, prefix_record, valuedata.ALL_PERMS, self.read_record):
            raise PermissionDenied(f"{identity} is not an administrator of the prefix of {name.text}", name.text)
        target = prefix_record if current is None else current
        for perm in perms:
            if not await has_right(identity, target, perm, self.read_record):
                raise PermissionDenied(f"{identity} lacks {valuedata.perm_name(perm)} on {name.text}", name.text)

    async def _check_enterprise(self, caller: Caller, name: HandleName) -> int | None:
        """The enterprise whose prefix holds ``name`` (None for node handles); refuses writes under a
        disabled enterprise unless the caller is a node admin."""
        if name.is_prefix_handle:
            enterprise = await self.store.get_enterprise(name.suffix)
            if enterprise is not None and enterprise.status != "active" and not caller.node_admin:
                raise PermissionDenied(f"enterprise {enterprise.prefix} is disabled", name.text)
            return None
        enterprise = await self.store.get_enterprise(name.prefix)
        if enterprise is None:
            if normalise_prefix(name.prefix) != self._node_prefix_norm:
                raise NotResponsible(f"prefix {name.prefix} is not allocated on this node", name.text)
            return None
        if enterprise.status != "active" and not caller.node_admin:
            raise PermissionDenied(f"enterprise {enterprise.prefix} is disabled", name.text)
        return enterprise.id

    # -- values --------------------------------------------------------------------------------
    async def hash_secrets(self, values: Sequence[HandleValue]) -> Sequence[HandleValue]:
        """Values as a client sent them, with every plain-text HS_SECKEY hashed (in the scrypt pool,
        never on the event loop). A pre-hashed one must be exactly what this node would make
        (``check_client_hash``): the node alone chooses the scrypt parameters (202 otherwise)."""
        if not any(v.type.upper() == "HS_SECKEY" for v in values):
            return values
        out = []
        for v in values:
            if v.type.upper() == "HS_SECKEY":
                try:
                    text = v.data.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidValue(f"HS_SECKEY at index {v.index} must be text") from None
                if not text:
                    raise InvalidValue(f"HS_SECKEY at index {v.index} is empty")
                if is_hashed(text):
                    check_client_hash(text, f"HS_SECKEY at index {v.index}")
                else:
                    v = replace(v, data=(await self.hasher.hash(text)).encode("ascii"))
            out.append(v)
        return out

    def _prepare(self, values: Sequence[HandleValue], now: int | None = None) -> tuple[HandleValue, ...]:
        """Stamp values with the write time and check HS_ADMIN data. HS_SECKEY values must be hashed
        already (:meth:`hash_secrets`); one that is not is refused rather than stored in clear."""
        now = self.clock() if now is None else now
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
        identity = caller.require_authenticated()
        data = valuedata.encode_admin(identity.handle, identity.index, DEFAULT_HANDLE_ADMIN_PERMS)
        return HandleValue(index=ADMIN_INDEX, type="HS_ADMIN", data=data, timestamp=self.clock())

    @staticmethod
    def _admin(admin_handle: str, perms: int, now: int) -> HandleValue:
        """HS_ADMIN at index 100 naming ``300:<admin_handle>``."""
        data = valuedata.encode_admin(admin_handle, SECKEY_INDEX, perms)
        return HandleValue(index=ADMIN_INDEX, type="HS_ADMIN", data=data, timestamp=now)

    async def _seckey(self, secret: str, now: int) -> HandleValue:
        """The hashed secret key at index 300, readable by administrators only."""
        data = (await self.hasher.hash(secret)).encode("ascii")
        return HandleValue(SECKEY_INDEX, "HS_SECKEY", data, timestamp=now, permissions=ADMIN_READ | ADMIN_WRITE)

    @staticmethod
    def _admin_group(prefix_handle: str, now: int) -> HandleValue:
        """``200:0.NA/<prefix>`` names the prefix's admins: clients such as pyhandle write
        HS_ADMIN values naming it by default."""
        data = valuedata.encode_vlist([Reference(prefix_handle, SECKEY_INDEX)])
        return HandleValue(index=ADMIN_GROUP_INDEX, type="HS_VLIST", data=data, timestamp=now)

    # -- metadata templates --------------------------------------------------------------------
    async def template(self, scope: str, template_id: str, version: int | None) -> Template | None:
        if not is_template_id(template_id) or (scope and _lookup_text(scope) is None):
            return None  # nothing by that name could have been stored
        row = await self.store.get_template(scope, template_id, version)
        return Template.from_stored(template_id, row[0], scope, row[1]) if row else None

    async def check_template(self, name: HandleName, values: Sequence[HandleValue], where: str) -> None:
        """Validate ``values`` against the template their index-1001 value names, if any. The
        enterprise's own template of that id wins over a node-wide one."""
        ref = next((v for v in values if v.index == TEMPLATE_INDEX), None)
        if ref is None:
            return
        if ref.type.upper() != TEMPLATE_TYPE:
            raise InvalidValue(f"{where}: index {TEMPLATE_INDEX} is reserved for a {TEMPLATE_TYPE} reference")
        template_id, version = parse_template_ref(ref, where)
        key = (normalise_prefix(name.prefix), template_id, version)
        now = time.monotonic()
        cached = self._templates.get(key)
        template = cached[0] if cached is not None and cached[1] > now else None
        if template is None:
            own = await self.template(key[0], template_id, version)
            template = own or await self.template("", template_id, version)
            if template is None:
                raise InvalidValue(f"{where}: no template {template_id}@{version} for prefix {name.prefix}", name.text)
            if len(self._templates) > 1000:
                self._templates.clear()
            # A stored version never changes, so the enterprise's own one is kept for good; a node-wide
            # fallback only briefly, since the enterprise may add its own of that id and version.
            self._templates[key] = (template, float("inf") if own else now + TEMPLATE_FALLBACK_TTL)
        validate_against(template, values, where)

    async def put_template(
        self, caller: Caller, template_id: str, body: object, scope_prefix: str | None, *, new: bool
    ) -> Template:
        """Create a template (``new``: version 1, refused if it exists) or add its next version:
        node-wide (node admin) or for one enterprise prefix (that prefix's admin)."""
        identity = caller.require_authenticated()
        if caller.role == "auditor":
            raise PermissionDenied("the auditor identity cannot write")
        scope = ""
        if scope_prefix:
            text = _lookup_text(scope_prefix)
            enterprise = await self.store.get_enterprise(text) if text is not None else None
            if enterprise is None:
                raise InvalidRequest(f"no enterprise with prefix {_shown(scope_prefix)}")
            scope = normalise_prefix(enterprise.prefix)
            if enterprise.status != "active" and not caller.node_admin:
                raise PermissionDenied(f"enterprise {enterprise.prefix} is disabled")
            if not caller.node_admin:
                record = await self.read_record(parse_handle(prefix_handle_of(enterprise.prefix)).key)
                if not await has_right(identity, record, valuedata.ADD_HANDLE, self.read_record):
                    raise PermissionDenied(f"{identity} does not administer prefix {enterprise.prefix}")
        elif not caller.node_admin:
            raise PermissionDenied("node-wide templates are for the node administrator; give a prefix")
        async with self._enterprise_lock:
            previous = await self.template(scope, template_id, None)
            if new and previous is not None:
                raise HandleAlreadyExists(f"template {template_id} exists; PUT adds a version")
            if not new and previous is None:
                raise HandleNotFound(f"no template {template_id}; POST /api/templates creates it")
            version = previous.version + 1 if previous else 1
            template = template_from_json(body, id=template_id, version=version, scope=scope, previous=previous)
            await self.store.add_template(scope, template_id, version, template.fields_json(), now=self.clock())
            self._templates.clear()
        return template

    async def list_templates(self) -> list[Template]:
        return [Template.from_stored(i, v, s, b) for s, i, v, b in await self.store.list_templates()]

    # -- single-handle writes ------------------------------------------------------------------
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
            name = self.parse(name.text + uuid.uuid4().hex)
        self.require_responsible(name)
        limits = self.settings.value_limits
        values = await self.hash_secrets(values)  # once, before the compare-and-set retries
        for _ in range(8):  # compare-and-set retries when a concurrent writer wins the race
            row = await self.store.get(name.key)
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
            await self.check_template(name, new_values, "values")
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
            (result,) = await self.store.write([write], now=self.clock())
            if result.ok:
                await self._changed([name.key])
                created = result.outcome is WriteOutcome.CREATED or added
                return WriteReport(name.text, created, result.version)
            if result.outcome is WriteOutcome.EXISTS and not overwrite:
                raise HandleAlreadyExists("handle already exists", name.text)
        raise ServerError("too many concurrent writers on this handle; try again", name.text)

    async def _require_prefix_handle(self, name: HandleName) -> None:
        if normalise_prefix(name.prefix) == self._node_prefix_norm:
            return
        if await self.store.get(parse_handle(prefix_handle_of(name.prefix)).key) is None:
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
        perms = _perms_for_change(current.values, new_values)
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
        return new_values, _perms_for_change(current.values, new_values)

    async def delete(self, caller: Caller, name: HandleName, indexes: Sequence[int] | None = None) -> WriteReport:
        """Delete the handle, or only the values at ``indexes``."""
        caller.require_authenticated()
        self.require_responsible(name)
        for _ in range(8):
            row = await self.store.get(name.key)
            if row is None:
                raise HandleNotFound("handle not found", name.text)
            current = unpack_record(row.packed)
            if indexes:
                present = {v.index for v in current.values}
                absent = [i for i in indexes if i not in present]
                if absent:
                    raise ValuesNotFound(f"no value at index {absent[0]}", name.text)
                remaining = tuple(v for v in current.values if v.index not in set(indexes))
                perms = _perms_for_change(current.values, remaining)
                values: tuple[HandleValue, ...] | None = remaining
            else:
                perms = [valuedata.DELETE_HANDLE]
                values = None
            await self._authorise(caller, name, current, perms)
            enterprise_id = await self._check_enterprise(caller, name)
            if name.key == self._node_admin_key and values is None:
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
            (result,) = await self.store.write([write], now=self.clock())
            if result.ok:
                await self._changed([name.key])
                return WriteReport(name.text, False, result.version)
            if result.outcome is WriteOutcome.MISSING:
                raise HandleNotFound("handle not found", name.text)
        raise ServerError("too many concurrent writers on this handle; try again", name.text)

    async def write_many(self, writes: Sequence[HandleWrite], *, atomic: bool = True) -> list[WriteResult]:
        """Apply already validated and authorised writes (batches, imports) and notify listeners."""
        results = await self.store.write(writes, now=self.clock(), atomic=atomic)
        changed = [w.key for w, r in zip(writes, results, strict=True) if r.ok]
        if changed:
            await self._changed(changed)
        return results

    async def list_handles(self, caller: Caller, prefix: str, page: int, page_size: int) -> tuple[int, list[str]]:
        identity = caller.require_authenticated()
        try:
            name = self.parse(prefix_handle_of(prefix))
        except InvalidHandle:
            raise InvalidHandle(f"invalid prefix {prefix!r}", prefix) from None
        self.require_responsible(name)
        if not caller.node_admin:
            record = await self.read_record(name.key)
            if not await has_right(identity, record, valuedata.LIST_HANDLES, self.read_record):
                raise PermissionDenied(f"{identity} may not list handles under {prefix}", prefix)
        return await self.store.list_handles(normalise_prefix(prefix), page, page_size)

    # -- node bootstrap ------------------------------------------------------------------------
    async def bootstrap(self, admin_secret: str | None, site_data: bytes | None) -> str | None:
        """Create the node's prefix handle on first start. Returns a generated secret (to print once)
        when none was given, else None. An existing prefix handle is left as it is, except that the
        HS_SITE value is refreshed to describe the interfaces this process serves."""
        key = self._node_admin_key
        existing = await self.read_record(key)
        now = self.clock()
        generated = None
        if existing is None:
            secret = admin_secret or generate_secret()
            generated = None if admin_secret else secret
            values = [
                self._admin(self.node_admin_handle, valuedata.ALL_PERMS, now),
                self._admin_group(self.node_admin_handle, now),
                await self._seckey(secret, now),
            ]
            if site_data is not None:
                values.insert(0, HandleValue(index=SITE_INDEX, type="HS_SITE", data=site_data, timestamp=now))
            write = HandleWrite(key, self.node_admin_handle, "0.NA", tuple(values), MUST_NOT_EXIST)
            (result,) = await self.store.write([write], now=now)
            if result.outcome is WriteOutcome.EXISTS:  # another worker got there first
                return None
            await self._changed([key])
            return generated
        if site_data is not None:
            site = existing.value_at(SITE_INDEX)
            if site is None or (site.type.upper() == "HS_SITE" and site.data != site_data):
                others = tuple(v for v in existing.values if v.index != SITE_INDEX)
                values = (HandleValue(index=SITE_INDEX, type="HS_SITE", data=site_data, timestamp=now), *others)
                write = HandleWrite(key, existing.handle, "0.NA", values, existing.version)
                (result,) = await self.store.write([write], now=now)
                if result.ok:
                    await self._changed([key])
        return None

    async def set_node_value(self, value: HandleValue) -> None:
        """Add or replace one value of the node's prefix handle (node key, site)."""
        for _ in range(8):
            existing = await self.read_record(self._node_admin_key)
            if existing is None:
                raise HandleNotFound("node prefix handle missing", self.node_admin_handle)
            current = existing.value_at(value.index)
            if current is not None and current.type == value.type and current.data == value.data:
                return
            values = tuple(
                sorted([*(v for v in existing.values if v.index != value.index), value], key=lambda v: v.index)
            )
            write = HandleWrite(self._node_admin_key, existing.handle, "0.NA", values, existing.version)
            (result,) = await self.store.write([write], now=self.clock())
            if result.ok:
                await self._changed([self._node_admin_key])
                return
        raise ServerError("could not update the node prefix handle")

    # -- promoters and enterprises -------------------------------------------------------------
    @staticmethod
    def require_node_admin(caller: Caller) -> None:
        caller.require_authenticated()
        if not caller.node_admin:
            raise PermissionDenied("only the node administrator manages promoters and enterprises")

    @staticmethod
    def _uscc(text: object) -> str:
        if not isinstance(text, str):
            raise InvalidRequest("uscc (unified social credit code) must be a string")
        try:
            return normalize_uscc(text)
        except InvalidUSCC as exc:
            raise InvalidRequest(f"invalid unified social credit code: {exc}") from None

    @staticmethod
    def _name(text: object) -> str:
        if not isinstance(text, str) or not text.strip() or len(text) > 200 or not text.isprintable():
            raise InvalidRequest("name must be a non-empty string of at most 200 printable characters")
        return text.strip()

    async def add_promoter(self, caller: Caller, name: object, uscc: object) -> Promoter:
        self.require_node_admin(caller)
        return await self.store.add_promoter(self._name(name), self._uscc(uscc), now=self.clock())

    async def find_promoter(self, ref: object) -> Promoter:
        """By id (an int or a short string of ASCII digits) or by credit code (18 characters, which
        may be all digits too)."""
        promoter = None
        number, text = _reference(ref, "promoter")
        if number is not None:
            promoter = await self.store.get_promoter(number)
        if promoter is None and text is not None:
            promoter = await self.store.get_promoter(text.upper())
        if promoter is None:
            raise InvalidRequest(f"unknown promoter {_shown(ref)}")
        return promoter

    async def find_enterprise(self, ref: object) -> Enterprise:
        """By id, by prefix or by credit code."""
        enterprise = None
        number, text = _reference(ref, "enterprise")
        if number is not None:
            enterprise = await self.store.get_enterprise(number)
        if enterprise is None and text is not None:
            enterprise = await self.store.get_enterprise(text)
        if enterprise is None:
            raise InvalidRequest(f"unknown enterprise {_shown(ref)}")
        return enterprise

    async def add_enterprise(
        self, caller: Caller, name: object, uscc: object, promoter: object, prefix: object = None
    ) -> tuple[Enterprise, str]:
        """Onboard an enterprise: allocate its prefix, create its prefix handle with its own HS_ADMIN
        and hashed HS_SECKEY. Returns the enterprise and its secret (shown once, stored hashed)."""
        self.require_node_admin(caller)
        name_ = self._name(name)
        uscc_ = self._uscc(uscc)
        promoter_ = await self.find_promoter(promoter)
        async with self._enterprise_lock:
            if prefix is None:
                prefix_ = await self._next_prefix()
            else:
                prefix_ = self._check_enterprise_prefix(prefix)
            secret = generate_secret()
            handle = prefix_handle_of(prefix_)
            now = self.clock()
            node = await self.read_record(self._node_admin_key)
            site = node.value_at(SITE_INDEX) if node else None
            values = [
                self._admin(handle, ENTERPRISE_PERMS, now),
                self._admin_group(handle, now),
                await self._seckey(secret, now),
            ]
            if site is not None:
                values.insert(0, replace(site, timestamp=now))
            hname = parse_handle(handle)
            write = HandleWrite(hname.key, handle, "0.NA", tuple(values), MUST_NOT_EXIST)
            enterprise = await self.store.add_enterprise(name_, uscc_, prefix_, promoter_.id, write, now=now)
        await self._changed([hname.key])
        return enterprise, secret

    def _check_enterprise_prefix(self, prefix: object) -> str:
        if not isinstance(prefix, str):
            raise InvalidRequest("prefix must be a string")
        text = prefix.strip()
        node = self.node_prefix
        if not normalise_prefix(text).startswith(self._node_prefix_norm + "."):
            raise InvalidRequest(f"an enterprise prefix must be derived from the node prefix {node} ({node}.NNNN)")
        tail = text[len(node) + 1 :]
        # ASCII letters and digits, short enough that numbering the next one (_next_prefix) stays exact.
        if not tail or not all(part.isascii() and part.isalnum() and len(part) <= 16 for part in tail.split(".")):
            raise InvalidRequest(f"invalid enterprise prefix {_shown(text)}: {node}. then ASCII letters and digits")
        try:
            self.parse(prefix_handle_of(text))
        except InvalidHandle as exc:
            raise InvalidRequest(f"invalid enterprise prefix: {exc.message}") from None
        return text

    async def _next_prefix(self) -> str:
        highest = FIRST_ENTERPRISE_NUMBER - 1
        node = self._node_prefix_norm + "."
        for p in await self.store.enterprise_prefixes():
            tail = normalise_prefix(p)[len(node) :] if normalise_prefix(p).startswith(node) else ""
            if is_uint_text(tail):
                highest = max(highest, int(tail))
        return f"{self.node_prefix}.{highest + 1}"

    async def add_auditor(self, caller: Caller, name: object) -> tuple[str, str]:
        """Create the bureau's read-only identity ``300:<node prefix>/auditor/<name>``. It may read
        tallies and the admin lists and write nothing. Returns (identity, secret shown once)."""
        self.require_node_admin(caller)
        if not isinstance(name, str) or not AUDITOR_NAME.match(name):
            raise InvalidRequest("auditor name: 1-32 characters of a-z, 0-9 and '-'")
        handle = f"{self.node_prefix}/auditor/{name}"
        hname = self.parse(handle)
        secret = generate_secret()
        now = self.clock()
        values = (
            self._admin(self.node_admin_handle, valuedata.ALL_PERMS, now),
            await self._seckey(secret, now),
        )
        write = HandleWrite(hname.key, handle, normalise_prefix(self.node_prefix), values, MUST_NOT_EXIST)
        (result,) = await self.store.write([write], now=now)
        if not result.ok:
            raise HandleAlreadyExists(f"auditor {name} already exists", handle)
        # The role is granted only once the identity exists (a failure here leaves it without rights).
        await self.store.set_meta(f"role:{hname.key}:{SECKEY_INDEX}", "auditor")
        await self._changed([hname.key])
        return f"{SECKEY_INDEX}:{handle}", secret

    async def list_auditors(self, caller: Caller) -> list[Auditor]:
        """The bureau's identities in force: handles ``<node prefix>/auditor/<name>`` holding the role."""
        self.require_node_admin(caller)
        node = normalise_prefix(self.node_prefix)
        out: list[Auditor] = []
        page = 0
        while True:
            _, keys = await self.store.list_handles(node, page, 1000)
            if not keys:
                return out
            for key in keys:
                suffix = key.partition("/")[2]
                if not suffix.lower().startswith("auditor/"):
                    continue
                if await self.store.get_meta(f"role:{key}:{SECKEY_INDEX}") != "auditor":
                    continue
                record = await self.read_record(key)
                if record is None:
                    continue
                seckey = record.value_at(SECKEY_INDEX)
                out.append(
                    Auditor(
                        name=record.handle.partition("/auditor/")[2],
                        identity=f"{SECKEY_INDEX}:{record.handle}",
                        created_at=seckey.timestamp if seckey is not None else 0,
                    )
                )
            page += 1

    async def revoke_auditor(self, caller: Caller, name: object) -> str:
        """Take the role away, then delete the identity's handle (and with it the secret key), so
        every node sharing the store refuses it from the next request on. Returns the identity."""
        self.require_node_admin(caller)
        if not isinstance(name, str) or not AUDITOR_NAME.match(name):
            raise InvalidRequest("auditor name: 1-32 characters of a-z, 0-9 and '-'")
        handle = f"{self.node_prefix}/auditor/{name}"
        hname = self.parse(handle)
        role_key = f"role:{hname.key}:{SECKEY_INDEX}"
        record = await self.read_record(hname.key)
        if record is None and await self.store.get_meta(role_key) != "auditor":
            raise HandleNotFound(f"no auditor {name}", handle)
        await self.store.set_meta(role_key, "revoked")
        if record is not None:
            write = HandleWrite(hname.key, record.handle, normalise_prefix(self.node_prefix), None)
            await self.store.write([write], now=self.clock())
        await self._changed([hname.key])
        return f"{SECKEY_INDEX}:{handle}"

    async def move_enterprise(self, caller: Caller, enterprise: object, promoter: object) -> Enterprise:
        self.require_node_admin(caller)
        ent = await self.find_enterprise(enterprise)
        prom = await self.find_promoter(promoter)
        if ent.promoter_id == prom.id:
            raise InvalidRequest(f"enterprise {ent.prefix} already belongs to promoter {prom.id}")
        await self.store.move_enterprise(ent.id, prom.id, effective_at=self.clock())
        return replace(ent, promoter_id=prom.id)

    async def set_enterprise_status(self, caller: Caller, enterprise: object, status: str) -> Enterprise:
        self.require_node_admin(caller)
        if status not in ("active", "disabled"):
            raise InvalidRequest("status must be 'active' or 'disabled'")
        ent = await self.find_enterprise(enterprise)
        await self.store.set_enterprise_status(ent.id, status)
        return replace(ent, status=status)


AUDITOR_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_REFERENCE_TEXT = 64  # longer than any prefix or credit code


def _lookup_text(ref: object) -> str | None:
    """A prefix or credit code to look up, or None when ``ref`` cannot be one (so that no store
    sees a NUL, a control character or a long string)."""
    if not isinstance(ref, str):
        return None
    text = ref.strip()
    return text if text and len(text) <= _REFERENCE_TEXT and text.isprintable() else None


def _reference(ref: object, what: str) -> tuple[int | None, str | None]:
    """A promoter or enterprise reference from a client: (id, text to look up by prefix or credit
    code). An id is checked against the stores' id range here, before any store sees it; a short
    string of ASCII digits is tried as an id first, then as text."""
    if isinstance(ref, str):
        text = _lookup_text(ref)
        number = int(text) if text is not None and is_uint_text(text) and len(text) < 18 else None
        return number, text
    return as_uint(ref, what), None


def _shown(ref: object) -> str:
    return repr(ref)[:40]


@dataclass(frozen=True)
class Auditor:
    """One of the bureau's read-only identities."""

    name: str
    identity: str  # 300:<node prefix>/auditor/<name>
    created_at: int


def _perms_for_change(old: Sequence[HandleValue], new: Sequence[HandleValue]) -> list[int]:
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
