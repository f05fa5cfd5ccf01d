"""The audit log: what was done to the node by whom, kept in the store next to the data.

An entry names the identity that acted, the action (``admin.reset-secret``, ``store.restore``, …),
what it acted on, where the request came from (``idnode CLI, user@host``; a client address) and a
small JSON object of details. Entries are only ever appended. Nothing secret goes in: a detail is
for people reading the log, not for the credentials themselves.

The CLI records its operator actions here (``idnode admin reset-secret``, ``idnode backup``,
``idnode restore``) and lists them (``idnode audit list``); the admin console is meant to append
and read through the same two methods.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from registry.errors import InvalidRequest
from registry.namespace import Namespace
from registry.stores.base import AuditEntry

__all__ = ["ACTION", "MAX_PAGE", "AuditLog"]

ACTION = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*$")
MAX_TEXT = 1000  # characters of actor, target and source
MAX_DETAIL = 8192  # bytes of the detail object as JSON
MAX_PAGE = 1000


class AuditLog:
    """Append entries and read them back, newest first."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns

    async def append(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        source: str,
        detail: Mapping[str, object] | None = None,
    ) -> AuditEntry:
        """Record one action; the entry as stored (with its id and time)."""
        if not ACTION.match(action) or len(action) > 64:
            raise InvalidRequest(f"audit action {action!r}: dotted words of a-z, 0-9 and '-'")
        for name, text in (("actor", actor), ("target", target), ("source", source)):
            if not text or len(text) > MAX_TEXT:
                raise InvalidRequest(f"audit {name}: 1-{MAX_TEXT} characters")
        body = json.dumps(dict(detail or {}), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        if len(body.encode("utf-8")) > MAX_DETAIL:
            raise InvalidRequest(f"audit detail: at most {MAX_DETAIL} bytes of JSON")
        at = self.ns.clock()
        entry_id = await self.ns.store.add_audit(at, actor, action, target, source, body)
        return AuditEntry(entry_id, at, actor, action, target, source, body)

    async def entries(
        self,
        *,
        limit: int = 50,
        before_id: int | None = None,
        action: str | None = None,
        target: str | None = None,
        since: int | None = None,
    ) -> list[AuditEntry]:
        """Newest first: at most ``limit`` (1 to MAX_PAGE); ``before_id`` pages back from an
        entry; ``action``, ``target`` and ``since`` (UNIX seconds) narrow the list."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        if before_id is not None and before_id < 1:
            raise InvalidRequest("before must be a positive entry id")
        return await self.ns.store.list_audit(
            limit=limit, before_id=before_id, action=action, target=target, since=since
        )
