"""Template storage: lookup (the enterprise's own before the node-wide one), versioning and the
check a write's values get against the template they name. The template model and its rules
are in :mod:`registry.templates`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from registry import valuedata
from registry.audit import audit_record
from registry.auth import Caller, has_right
from registry.errors import HandleAlreadyExists, HandleNotFound, InvalidRequest, InvalidValue, PermissionDenied
from registry.inputs import lookup_text, shown
from registry.model import HandleName, HandleValue, normalise_prefix, parse_handle, prefix_handle_of
from registry.namespace import Namespace
from registry.templates import (
    TEMPLATE_INDEX,
    TEMPLATE_TYPE,
    Template,
    is_template_id,
    parse_template_ref,
    template_from_json,
    validate_against,
)

__all__ = ["TemplateService"]

TEMPLATE_FALLBACK_TTL = 10.0  # seconds a node-wide template stands in for an enterprise's own


class TemplateService:
    """Stored templates, with the versions a write names kept in memory (a stored version never changes)."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self._lock = asyncio.Lock()  # one new version at a time, so versions are numbered without gaps
        self._templates: dict[tuple[str, str, int], tuple[Template, float]] = {}

    async def template(self, scope: str, template_id: str, version: int | None) -> Template | None:
        if not is_template_id(template_id) or (scope and lookup_text(scope) is None):
            return None  # nothing by that name could have been stored
        row = await self.ns.store.get_template(scope, template_id, version)
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
            text = lookup_text(scope_prefix)
            enterprise = await self.ns.store.get_enterprise(text) if text is not None else None
            if enterprise is None:
                raise InvalidRequest(f"no enterprise with prefix {shown(scope_prefix)}")
            scope = normalise_prefix(enterprise.prefix)
            if enterprise.status != "active" and not caller.node_admin:
                raise PermissionDenied(f"enterprise {enterprise.prefix} is disabled")
            if not caller.node_admin:
                record = await self.ns.read_record(parse_handle(prefix_handle_of(enterprise.prefix)).key)
                if not await has_right(identity, record, valuedata.ADD_HANDLE, self.ns.read_record):
                    raise PermissionDenied(f"{identity} does not administer prefix {enterprise.prefix}")
        elif not caller.node_admin:
            raise PermissionDenied("node-wide templates are for the node administrator; give a prefix")
        async with self._lock:
            previous = await self.template(scope, template_id, None)
            if new and previous is not None:
                raise HandleAlreadyExists(f"template {template_id} exists; PUT adds a version")
            if not new and previous is None:
                raise HandleNotFound(f"no template {template_id}; POST /api/templates creates it")
            version = previous.version + 1 if previous else 1
            template = template_from_json(body, id=template_id, version=version, scope=scope, previous=previous)
            action = "template.create" if version == 1 else "template.version"
            audit = audit_record(self.ns, caller, action, f"{template_id}@{version}", {"prefix": scope or None})
            await self.ns.store.add_template(
                scope, template_id, version, template.fields_json(), now=self.ns.clock(), audit=audit
            )
            self._templates.clear()
        return template

    async def list_templates(self) -> list[Template]:
        return [Template.from_stored(i, v, s, b) for s, i, v, b in await self.ns.store.list_templates()]
