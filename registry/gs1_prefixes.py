"""GS1 company prefixes of enterprises: who may register, list and remove them, and which
enterprise owns a GTIN (for GS1 Digital Link resolution, :mod:`registry.gs1`).

An enterprise's administrator (an identity with ADD_HANDLE on its prefix handle, as for its
templates) and the node administrator register, list and remove the enterprise's prefixes; the
bureau's auditor lists them; anyone else is refused, without learning whether the enterprise
exists. A disabled enterprise's prefixes stay in force (its identifiers still resolve) but only
the node administrator changes them.
"""

from __future__ import annotations

from registry import valuedata
from registry.auth import Caller, has_right
from registry.errors import HandleNotFound, InvalidRequest, PermissionDenied
from registry.gs1 import MAX_GS1_PREFIXES, DigitalLink, company_prefix_candidates, parse_company_prefix
from registry.inputs import shown
from registry.model import parse_handle, prefix_handle_of
from registry.namespace import Namespace
from registry.onboarding import Onboarding
from registry.stores.base import Enterprise, Gs1Prefix
from registry.writes import WriteService

__all__ = ["Gs1Prefixes"]


class Gs1Prefixes:
    """The enterprises' GS1 company prefixes; writes go through the write service."""

    def __init__(self, ns: Namespace, onboarding: Onboarding, writes: WriteService) -> None:
        self.ns = ns
        self.onboarding = onboarding
        self.writes = writes

    async def _enterprise(self, caller: Caller, ref: object, *, write: bool) -> Enterprise:
        """The enterprise ``ref`` names, once ``caller`` may read (or, ``write``, change) its prefixes."""
        identity = caller.require_authenticated()
        if caller.role == "auditor" and write:
            raise PermissionDenied("the auditor identity cannot write")
        if caller.node_admin or caller.role == "auditor":
            return await self.onboarding.find_enterprise(ref)
        denied = PermissionDenied(f"{identity} does not administer enterprise {shown(ref)}")
        try:
            enterprise = await self.onboarding.find_enterprise(ref)
        except InvalidRequest:
            raise denied from None  # an unknown enterprise looks like another's to a non-administrator
        record = await self.ns.read_record(parse_handle(prefix_handle_of(enterprise.prefix)).key)
        if not await has_right(identity, record, valuedata.ADD_HANDLE, self.ns.read_record):
            raise denied
        if write and enterprise.status != "active":
            raise PermissionDenied(f"enterprise {enterprise.prefix} is disabled")
        return enterprise

    async def add_prefix(self, caller: Caller, ref: object, company_prefix: object) -> tuple[Gs1Prefix, bool]:
        """Register a company prefix for the enterprise: (the prefix, True when it is new)."""
        enterprise = await self._enterprise(caller, ref, write=True)
        value = parse_company_prefix(company_prefix)
        return await self.writes.add_gs1_prefix(enterprise.id, value, limit=MAX_GS1_PREFIXES)

    async def list_prefixes(self, caller: Caller, ref: object) -> tuple[Enterprise, list[Gs1Prefix]]:
        enterprise = await self._enterprise(caller, ref, write=False)
        return enterprise, await self.ns.store.list_gs1_prefixes(enterprise.id)

    async def remove_prefix(self, caller: Caller, ref: object, company_prefix: object) -> str:
        enterprise = await self._enterprise(caller, ref, write=True)
        value = parse_company_prefix(company_prefix)
        if not await self.writes.remove_gs1_prefix(enterprise.id, value):
            raise HandleNotFound(f"enterprise {enterprise.prefix} has no GS1 company prefix {value}")
        return value

    async def owner(self, link: DigitalLink) -> Gs1Prefix | None:
        """The registered company prefix (with its enterprise) that owns the link's GTIN: the
        longest one that starts the GTIN after its first digit; None when no enterprise has it."""
        return await self.ns.store.find_gs1_prefix(company_prefix_candidates(link.gtin))
