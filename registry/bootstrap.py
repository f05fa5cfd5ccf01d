"""The node's own prefix handle (``0.NA/<node prefix>``): created on first start with the node
administrator's HS_ADMIN and hashed secret key, and kept describing this node (HS_SITE, node key)."""

from __future__ import annotations

from registry import valuedata
from registry.admin_values import SITE_INDEX, admin_group_value, admin_value, seckey_value
from registry.audit import audit_record
from registry.auth import Caller
from registry.callers import require_node_admin
from registry.errors import HandleNotFound, ServerError
from registry.model import HandleValue, Record
from registry.namespace import Namespace
from registry.secretkeys import SecretHasher, generate_secret
from registry.stores.base import MUST_NOT_EXIST, AuditRecord, WriteOutcome
from registry.writes import WriteService

__all__ = ["NodeBootstrap"]


class NodeBootstrap:
    """Writes the node's prefix handle through the write service."""

    def __init__(self, ns: Namespace, hasher: SecretHasher, writes: WriteService) -> None:
        self.ns = ns
        self.hasher = hasher
        self.writes = writes

    async def bootstrap(self, admin_secret: str | None, site_data: bytes | None) -> str | None:
        """Create the node's prefix handle on first start. Returns a generated secret (to print once)
        when none was given, else None. An existing prefix handle is left as it is, except that the
        HS_SITE value is refreshed to describe the interfaces this process serves."""
        key = self.ns.node_admin_key
        existing = await self.ns.read_record(key)
        now = self.ns.clock()
        generated = None
        if existing is None:
            secret = admin_secret or generate_secret()
            generated = None if admin_secret else secret
            values = [
                admin_value(self.ns.node_admin_handle, valuedata.ALL_PERMS, now),
                admin_group_value(self.ns.node_admin_handle, now),
                await seckey_value(self.hasher, secret, now),
            ]
            if site_data is not None:
                values.insert(0, HandleValue(index=SITE_INDEX, type="HS_SITE", data=site_data, timestamp=now))
            result = await self.writes.write_node_prefix_handle(tuple(values), expect=MUST_NOT_EXIST, now=now)
            if result.outcome is WriteOutcome.EXISTS:  # another worker got there first
                return None
            return generated
        if site_data is not None:
            await self._refresh_site(existing, site_data, now)
        return None

    async def reset_admin_secret(self, caller: Caller) -> str:
        """Replace the node administrator's secret key (HS_SECKEY at index 300 of the node's prefix
        handle) with a new generated one, returned to be shown once; only its hash is stored. The
        write goes through the write service, so caches and remembered credential checks drop the
        old key on every node that hears of it. Recorded in the audit log with the write."""
        require_node_admin(caller)
        secret = generate_secret()
        audit = audit_record(self.ns, caller, "admin.reset-secret", self.ns.node_admin_handle)
        await self.set_node_value(await seckey_value(self.hasher, secret, self.ns.clock()), audit=audit)
        return secret

    async def publish_site(self, site_data: bytes) -> None:
        """Describe the interfaces this process serves in the prefix handle's HS_SITE (once its
        listeners are bound); a value of another type an operator put at that index is kept."""
        existing = await self.ns.read_record(self.ns.node_admin_key)
        if existing is None:
            raise HandleNotFound("node prefix handle missing", self.ns.node_admin_handle)
        await self._refresh_site(existing, site_data, self.ns.clock())

    async def _refresh_site(self, existing: Record, site_data: bytes, now: int) -> None:
        site = existing.value_at(SITE_INDEX)
        if site is None or (site.type.upper() == "HS_SITE" and site.data != site_data):
            others = tuple(v for v in existing.values if v.index != SITE_INDEX)
            values = (HandleValue(index=SITE_INDEX, type="HS_SITE", data=site_data, timestamp=now), *others)
            await self.writes.write_node_prefix_handle(values, expect=existing.version, now=now)

    async def set_node_value(self, value: HandleValue, *, audit: AuditRecord | None = None) -> None:
        """Add or replace one value of the node's prefix handle (node key, site); ``audit`` is
        recorded with the write."""
        for _ in range(8):
            existing = await self.ns.read_record(self.ns.node_admin_key)
            if existing is None:
                raise HandleNotFound("node prefix handle missing", self.ns.node_admin_handle)
            current = existing.value_at(value.index)
            if current is not None and current.type == value.type and current.data == value.data:
                return
            values = tuple(
                sorted([*(v for v in existing.values if v.index != value.index), value], key=lambda v: v.index)
            )
            result = await self.writes.write_node_prefix_handle(values, expect=existing.version, audit=audit)
            if result.ok:
                return
        raise ServerError("could not update the node prefix handle")
