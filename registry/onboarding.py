"""Onboarding: the promoters (推广服务机构) and the enterprises they bring, each enterprise with its
own prefix and prefix handle; moving an enterprise to another promoter and disabling it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace

from registry.admin_values import ENTERPRISE_PERMS, SITE_INDEX, admin_group_value, admin_value, seckey_value
from registry.audit import audit_record
from registry.auth import Caller
from registry.callers import require_node_admin
from registry.errors import InvalidHandle, InvalidRequest
from registry.inputs import is_uint_text, reference, shown
from registry.model import normalise_prefix, parse_handle, prefix_handle_of
from registry.namespace import Namespace
from registry.secretkeys import SecretHasher, generate_secret
from registry.stores.base import MUST_NOT_EXIST, Enterprise, HandleWrite, Promoter
from registry.uscc import InvalidUSCC, normalize_uscc
from registry.writes import WriteService

__all__ = ["FIRST_ENTERPRISE_NUMBER", "Onboarding"]

FIRST_ENTERPRISE_NUMBER = 1001


class Onboarding:
    """Promoters and enterprises, managed by the node administrator."""

    def __init__(self, ns: Namespace, hasher: SecretHasher, writes: WriteService) -> None:
        self.ns = ns
        self.hasher = hasher
        self.writes = writes
        self._lock = asyncio.Lock()  # one prefix allocation at a time, so two enterprises never get the same

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
        require_node_admin(caller)
        name_, uscc_ = self._name(name), self._uscc(uscc)
        audit = audit_record(self.ns, caller, "promoter.add", uscc_, {"name": name_})
        return await self.ns.store.add_promoter(name_, uscc_, now=self.ns.clock(), audit=audit)

    async def find_promoter(self, ref: object) -> Promoter:
        """By id (an int or a short string of ASCII digits) or by credit code (18 characters, which
        may be all digits too)."""
        promoter = None
        number, text = reference(ref, "promoter")
        if number is not None:
            promoter = await self.ns.store.get_promoter(number)
        if promoter is None and text is not None:
            promoter = await self.ns.store.get_promoter(text.upper())
        if promoter is None:
            raise InvalidRequest(f"unknown promoter {shown(ref)}")
        return promoter

    async def find_enterprise(self, ref: object) -> Enterprise:
        """By id, by prefix or by credit code."""
        enterprise = None
        number, text = reference(ref, "enterprise")
        if number is not None:
            enterprise = await self.ns.store.get_enterprise(number)
        if enterprise is None and text is not None:
            enterprise = await self.ns.store.get_enterprise(text)
        if enterprise is None:
            raise InvalidRequest(f"unknown enterprise {shown(ref)}")
        return enterprise

    async def add_enterprise(
        self, caller: Caller, name: object, uscc: object, promoter: object, prefix: object = None
    ) -> tuple[Enterprise, str]:
        """Onboard an enterprise: allocate its prefix, create its prefix handle with its own HS_ADMIN
        and hashed HS_SECKEY. Returns the enterprise and its secret (shown once, stored hashed)."""
        require_node_admin(caller)
        name_ = self._name(name)
        uscc_ = self._uscc(uscc)
        promoter_ = await self.find_promoter(promoter)
        async with self._lock:
            if prefix is None:
                prefix_ = await self._next_prefix()
            else:
                prefix_ = self._check_enterprise_prefix(prefix)
            secret = generate_secret()
            handle = prefix_handle_of(prefix_)
            now = self.ns.clock()
            node = await self.ns.read_record(self.ns.node_admin_key)
            site = node.value_at(SITE_INDEX) if node else None
            values = [
                admin_value(handle, ENTERPRISE_PERMS, now),
                admin_group_value(handle, now),
                await seckey_value(self.hasher, secret, now),
            ]
            if site is not None:
                values.insert(0, replace(site, timestamp=now))
            hname = parse_handle(handle)
            write = HandleWrite(hname.key, handle, "0.NA", tuple(values), MUST_NOT_EXIST)
            detail = {"name": name_, "uscc": uscc_, "promoter": promoter_.id}
            audit = audit_record(self.ns, caller, "enterprise.add", prefix_, detail)
            enterprise = await self.writes.create_enterprise(
                name_, uscc_, prefix_, promoter_.id, write, now=now, audit=audit
            )
        return enterprise, secret

    def _check_enterprise_prefix(self, prefix: object) -> str:
        if not isinstance(prefix, str):
            raise InvalidRequest("prefix must be a string")
        text = prefix.strip()
        node = self.ns.node_prefix
        if not normalise_prefix(text).startswith(self.ns.node_prefix_norm + "."):
            raise InvalidRequest(f"an enterprise prefix must be derived from the node prefix {node} ({node}.NNNN)")
        tail = text[len(node) + 1 :]
        # ASCII letters and digits, short enough that numbering the next one (_next_prefix) stays exact.
        if not tail or not all(part.isascii() and part.isalnum() and len(part) <= 16 for part in tail.split(".")):
            raise InvalidRequest(f"invalid enterprise prefix {shown(text)}: {node}. then ASCII letters and digits")
        try:
            self.ns.parse(prefix_handle_of(text))
        except InvalidHandle as exc:
            raise InvalidRequest(f"invalid enterprise prefix: {exc.message}") from None
        return text

    async def _next_prefix(self) -> str:
        highest = FIRST_ENTERPRISE_NUMBER - 1
        node = self.ns.node_prefix_norm + "."
        for p in await self.ns.store.enterprise_prefixes():
            tail = normalise_prefix(p)[len(node) :] if normalise_prefix(p).startswith(node) else ""
            if is_uint_text(tail):
                highest = max(highest, int(tail))
        return f"{self.ns.node_prefix}.{highest + 1}"

    async def move_enterprise(
        self, caller: Caller, enterprise: object, promoter: object, *, effective_at: int | None = None
    ) -> Enterprise:
        """Attribute the enterprise to ``promoter`` from ``effective_at`` (UNIX seconds; default now).
        Never from the past: tallies already made, final reports above all, must stay true."""
        require_node_admin(caller)
        now = self.ns.clock()
        if effective_at is not None and effective_at < now:
            raise InvalidRequest("a move takes effect now or later, never in the past")
        ent = await self.find_enterprise(enterprise)
        prom = await self.find_promoter(promoter)
        if ent.promoter_id == prom.id:
            raise InvalidRequest(f"enterprise {ent.prefix} already belongs to promoter {prom.id}")
        effective = now if effective_at is None else effective_at
        detail = {"from": ent.promoter_id, "to": prom.id, "effective": effective}
        audit = audit_record(self.ns, caller, "enterprise.move", ent.prefix, detail)
        await self.ns.store.move_enterprise(ent.id, prom.id, effective_at=effective, audit=audit)
        return replace(ent, promoter_id=prom.id)

    async def set_enterprise_status(self, caller: Caller, enterprise: object, status: object) -> Enterprise:
        require_node_admin(caller)
        checked = _status(status)
        ent = await self.find_enterprise(enterprise)
        action = "enterprise.disable" if checked == "disabled" else "enterprise.enable"
        audit = audit_record(self.ns, caller, action, ent.prefix, {"was": ent.status})
        await self.ns.store.set_enterprise_status(ent.id, checked, audit=audit)
        return replace(ent, status=checked)

    async def update_enterprise(self, caller: Caller, enterprise: object, changes: Mapping[str, object]) -> Enterprise:
        """Change an enterprise's ``status`` and/or move it to another ``promoter`` (from now on).
        Everything is checked before anything changes, so a bad half changes nothing."""
        unknown = set(changes) - {"promoter", "status"}
        if unknown or not changes:
            raise InvalidRequest("an enterprise update takes 'promoter' and/or 'status'")
        require_node_admin(caller)
        ent = await self.find_enterprise(enterprise)
        if "status" in changes:
            _status(changes["status"])
        if "promoter" in changes:
            promoter = await self.find_promoter(changes["promoter"])
            if promoter.id == ent.promoter_id:
                raise InvalidRequest(f"enterprise {ent.prefix} already belongs to promoter {promoter.id}")
        if "status" in changes:
            ent = await self.set_enterprise_status(caller, ent.id, changes["status"])
        if "promoter" in changes:
            ent = await self.move_enterprise(caller, ent.id, changes["promoter"])
        return ent


def _status(status: object) -> str:
    if not isinstance(status, str) or status not in ("active", "disabled"):
        raise InvalidRequest("status must be 'active' or 'disabled'")
    return status
