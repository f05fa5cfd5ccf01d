"""The bureau's auditors: read-only identities ``300:<node prefix>/auditor/<name>`` that may read
tallies and the admin lists and write nothing. Created, listed and revoked by the node administrator."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from registry import valuedata
from registry.admin_values import SECKEY_INDEX, admin_value, seckey_value
from registry.audit import audit_record
from registry.auth import Caller
from registry.callers import require_node_admin
from registry.errors import HandleAlreadyExists, HandleNotFound, InvalidRequest
from registry.model import normalise_prefix
from registry.namespace import Namespace
from registry.secretkeys import SecretHasher, generate_secret
from registry.writes import WriteService

__all__ = ["AUDITOR_NAME", "Auditor", "Auditors"]

AUDITOR_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class Auditor:
    """One of the bureau's read-only identities."""

    name: str
    identity: str  # 300:<node prefix>/auditor/<name>
    created_at: int


class Auditors:
    """The auditor identities: handles under the node prefix holding the ``auditor`` role."""

    def __init__(self, ns: Namespace, hasher: SecretHasher, writes: WriteService) -> None:
        self.ns = ns
        self.hasher = hasher
        self.writes = writes

    async def add_auditor(self, caller: Caller, name: object) -> tuple[str, str]:
        """Create the bureau's read-only identity ``300:<node prefix>/auditor/<name>``. It may read
        tallies and the admin lists and write nothing. Returns (identity, secret shown once)."""
        require_node_admin(caller)
        if not isinstance(name, str) or not AUDITOR_NAME.match(name):
            raise InvalidRequest("auditor name: 1-32 characters of a-z, 0-9 and '-'")
        handle = f"{self.ns.node_prefix}/auditor/{name}"
        hname = self.ns.parse(handle)
        secret = generate_secret()
        now = self.ns.clock()
        values = (
            admin_value(self.ns.node_admin_handle, valuedata.ALL_PERMS, now),
            await seckey_value(self.hasher, secret, now),
        )
        try:
            await self.writes.put_handle(caller, hname, values, overwrite=False)
        except HandleAlreadyExists:
            raise HandleAlreadyExists(f"auditor {name} already exists", handle) from None
        # The role is granted only once the identity exists (a failure here leaves it without rights).
        identity = f"{SECKEY_INDEX}:{handle}"
        audit = audit_record(self.ns, caller, "auditor.add", identity, {"name": name})
        await self.ns.store.set_meta(f"role:{hname.key}:{SECKEY_INDEX}", "auditor", audit=audit)
        return identity, secret

    async def list_auditors(self, caller: Caller) -> list[Auditor]:
        """The bureau's identities in force: handles ``<node prefix>/auditor/<name>`` holding the role."""
        require_node_admin(caller)
        node = normalise_prefix(self.ns.node_prefix)
        out: list[Auditor] = []
        page = 0
        while True:
            _, keys = await self.ns.store.list_handles(node, page, 1000)
            if not keys:
                return out
            for key in keys:
                suffix = key.partition("/")[2]
                if not suffix.lower().startswith("auditor/"):
                    continue
                if await self.ns.store.get_meta(f"role:{key}:{SECKEY_INDEX}") != "auditor":
                    continue
                record = await self.ns.read_record(key)
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
        require_node_admin(caller)
        if not isinstance(name, str) or not AUDITOR_NAME.match(name):
            raise InvalidRequest("auditor name: 1-32 characters of a-z, 0-9 and '-'")
        handle = f"{self.ns.node_prefix}/auditor/{name}"
        hname = self.ns.parse(handle)
        role_key = f"role:{hname.key}:{SECKEY_INDEX}"
        record = await self.ns.read_record(hname.key)
        if record is None and await self.ns.store.get_meta(role_key) != "auditor":
            raise HandleNotFound(f"no auditor {name}", handle)
        # The role goes first: from then on the identity reads nothing, whether or not its handle is
        # still there (roles are read from the store on every request, never cached).
        audit = audit_record(self.ns, caller, "auditor.revoke", f"{SECKEY_INDEX}:{handle}", {"name": name})
        await self.ns.store.set_meta(role_key, "revoked", audit=audit)
        if record is not None:
            with contextlib.suppress(HandleNotFound):  # deleted meanwhile
                await self.writes.delete(caller, hname)
        return f"{SECKEY_INDEX}:{handle}"
