"""The audit log: what was done to the node by whom, kept in the store next to the data.

An entry names the identity that acted, the action (``admin.reset-secret``, ``store.restore``, …),
what it acted on, where the request came from (``idnode CLI, user@host``; a client address) and a
small JSON object of details. Entries are only ever appended. Nothing secret goes in: a detail is
for people reading the log, not for the credentials themselves.

Administrative changes are recorded in the same store transaction as the change itself: the
registry's services build an :class:`~registry.stores.base.AuditRecord` with :func:`audit_record`
and hand it to the store call that makes the change (onboarding, moves, disabling, secret resets,
auditors, template versions, jobs), so a change is never without its entry nor an entry without
its change. Actions done outside the store (``idnode backup``, ``idnode restore``) are appended
with :meth:`AuditLog.append`. ``GET /api/audit`` and ``idnode audit list`` read them back.

Where a change came from is not something the registry knows: the transport sets it for the task
at hand with :func:`set_source` (the client address for an HTTP request, ``idnode CLI, user@host``
for a command), and every record made in that task carries it.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Mapping

from registry.auth import Caller
from registry.errors import InvalidRequest
from registry.namespace import Namespace
from registry.stores.base import AuditEntry, AuditRecord

__all__ = ["ACTION", "MAX_PAGE", "AuditLog", "audit_record", "set_source"]

ACTION = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*$")
MAX_TEXT = 1000  # characters of actor, target and source
MAX_DETAIL = 8192  # bytes of the detail object as JSON
MAX_PAGE = 1000
_SOURCE: contextvars.ContextVar[str] = contextvars.ContextVar("idnode_audit_source", default="idnode")


def set_source(source: str) -> None:
    """Where the changes made by the current task come from (a client address, ``idnode CLI,
    user@host``); records made later in this task (and in tasks it starts) carry it."""
    _SOURCE.set(source[:MAX_TEXT] or "idnode")


def _checked(actor: str, action: str, target: str, source: str, detail: Mapping[str, object] | None) -> str:
    """The detail as JSON text, once every part of an entry is acceptable."""
    if not ACTION.match(action) or len(action) > 64:
        raise InvalidRequest(f"audit action {action!r}: dotted words of a-z, 0-9 and '-'")
    for name, text in (("actor", actor), ("target", target), ("source", source)):
        if not text or len(text) > MAX_TEXT:
            raise InvalidRequest(f"audit {name}: 1-{MAX_TEXT} characters")
    body = json.dumps(dict(detail or {}), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    if len(body.encode("utf-8")) > MAX_DETAIL:
        raise InvalidRequest(f"audit detail: at most {MAX_DETAIL} bytes of JSON")
    return body


def audit_record(
    ns: Namespace, actor: Caller | str, action: str, target: str, detail: Mapping[str, object] | None = None
) -> AuditRecord:
    """An entry for a change about to be made, to be stored by the store call that makes it (at the
    namespace's clock, from the current task's source: :func:`set_source`)."""
    who = actor.name if isinstance(actor, Caller) else actor
    source = _SOURCE.get()
    return AuditRecord(ns.clock(), who, action, target, source, _checked(who, action, target, source, detail))


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
        """Record one action done outside the store (a backup, a restore); the entry as stored (with
        its id and time). Changes of the store's own data are recorded with them (:func:`audit_record`)."""
        body = _checked(actor, action, target, source, detail)
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
        actor: str | None = None,
    ) -> list[AuditEntry]:
        """Newest first: at most ``limit`` (1 to MAX_PAGE); ``before_id`` pages back from an
        entry; ``action``, ``target``, ``actor`` (an identity) and ``since`` (UNIX seconds) narrow the list."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        if before_id is not None and before_id < 1:
            raise InvalidRequest("before must be a positive entry id")
        return await self.ns.store.list_audit(
            limit=limit, before_id=before_id, action=action, target=target, since=since, actor=actor
        )
