"""Reverse lookup: the handles whose values match patterns (``URL=*example.com/p/*``), as HANDLE.NET's
search servlet answers pyhandle's ``Searcher.search_handle``.

Callers see only what they administer: the node administrator every handle of the node; an
enterprise's identities the handles under the prefix they administer (LIST_HANDLES on its prefix
handle, as for listing); the bureau's auditors none (they read tallies, not identifiers). Several
terms must all hold (``URL=*shop*&EMAIL=qa@*``). The index behind it and its rules are in
:mod:`registry.value_index`.
"""

from __future__ import annotations

from collections.abc import Mapping

from registry import valuedata
from registry.auth import Caller, Identity, has_right
from registry.callers import Callers
from registry.errors import HandleError, InvalidRequest, PermissionDenied
from registry.model import normalise_prefix, parse_handle, prefix_handle_of
from registry.namespace import Namespace
from registry.packing import unpack_record
from registry.value_index import condition, matches

__all__ = ["MAX_TERMS", "ValueSearch"]

MAX_TERMS = 5


class ValueSearch:
    """``search``: one page of the handles whose values match."""

    def __init__(self, ns: Namespace, callers: Callers) -> None:
        self.ns = ns
        self.callers = callers

    async def _administered(self, identity: Identity) -> list[str]:
        """The prefix an enterprise identity administers: the one its own handle is under (or is
        the prefix handle of), if it holds LIST_HANDLES there."""
        try:
            name = parse_handle(identity.handle)
            prefix = name.suffix if name.is_prefix_handle else name.prefix
            prefix_name = self.ns.parse(prefix_handle_of(prefix))
        except HandleError:
            return []
        if not self.ns.is_responsible(prefix_name):
            return []
        record = await self.ns.read_record(prefix_name.key)
        if record is None or not await has_right(identity, record, valuedata.LIST_HANDLES, self.ns.read_record):
            return []
        return [normalise_prefix(prefix)]

    async def search(
        self, caller: Caller, terms: Mapping[str, str], *, prefix: str | None, page: int, limit: int
    ) -> list[str]:
        """Handles (as registered) meeting every ``TYPE=pattern`` term, page ``page`` (from 0) of
        ``limit``, in listing order."""
        identity = caller.require_authenticated()
        if caller.role == "auditor":
            raise PermissionDenied("the auditor identity does not search identifiers")
        if not terms:
            raise InvalidRequest("give at least one TYPE=pattern to search for, e.g. URL=*example.com*")
        if len(terms) > MAX_TERMS:
            raise InvalidRequest(f"at most {MAX_TERMS} search terms")
        conditions = [condition(type_, pattern) for type_, pattern in terms.items()]
        if prefix:
            prefixes: list[str] | None = [await self.callers.require_lister(caller, prefix)]
        elif caller.node_admin:
            prefixes = None
        else:
            prefixes = await self._administered(identity)
            if not prefixes:
                return []
        found = await self.ns.store.search_values(conditions, prefixes, limit, page * limit)
        out = []
        for packed in found:
            record = unpack_record(packed)
            if matches(record, conditions):  # as it is now, not as it was when it was indexed
                out.append(record.handle)
        return out
