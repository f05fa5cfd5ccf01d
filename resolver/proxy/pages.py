"""The context dicts of the pages for people: the landing page of a handle, the node's home page with
its resolve form, and the error page. No HTML here (templates under ``templates/proxy/``), no I/O:
the view gathers what a page shows and these functions arrange it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from registry.errors import (
    RC_HANDLE_NOT_FOUND,
    RC_INVALID_HANDLE,
    RC_RECURSION_COUNT_TOO_HIGH,
    RC_SERVER_NOT_RESP,
)
from registry.model import HandleValue
from registry.stores.base import Enterprise
from registry.templates import TEMPLATE_INDEX, Template
from resolver.http.public_url import handle_path
from resolver.proxy.targets import Destinations, is_url_type
from resolver.proxy.urls import value_text

__all__ = [
    "MAX_SHOWN_TEXT",
    "TITLE_FIELDS",
    "Registration",
    "error_context",
    "home_context",
    "landing_context",
]

MAX_SHOWN_TEXT = 500  # characters of one value shown on a page
# Template field names that name the product: the first such field with text is the page's title.
TITLE_FIELDS = frozenset(
    {"name", "title", "product", "product name", "product_name", "productname", "gs1:productname",
     "产品名称", "商品名称", "品名", "名称", "产品"}
)  # fmt: skip
_HIDDEN_TYPES = ("HS_", "10320/")  # administrative and location values (HS_ADMIN, HS_ALIAS, 10320/loc)


@dataclass(frozen=True)
class Registration:
    """What the store knows of a handle beside its values: when it was registered and by whom."""

    created_at: int | None = None
    enterprise: Enterprise | None = None


def _instant(seconds: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds else None


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


def _shown(value: HandleValue) -> str | None:
    text = value_text(value.data)
    if text is None:
        return None
    return text if len(text) <= MAX_SHOWN_TEXT else text[:MAX_SHOWN_TEXT] + "…"


def _fields(found: Destinations, template: Template | None) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """The template's fields that have a value the caller may see, in the template's order: text
    fields as rows; fields whose data is a URL as links (their names, e.g. ``gs1:traceability``, label
    them). Also the names by index, for the links."""
    if template is None:
        return [], {}
    by_index = {v.index: v for v in found.values}
    rows, names = [], {}
    for field in template.fields:
        value = by_index.get(field.index)
        if value is None or field.disabled:
            continue
        names[field.index] = field.name
        if field.index not in found.urls:
            rows.append({"name": field.name, "text": _shown(value)})
    return rows, names


def _links(found: Destinations, primary: str | None, fields: dict[int, str]) -> list[dict[str, Any]]:
    """Every other target: URL values, locations of 10320/loc values and URL-valued fields, in index
    order, each once."""
    links, seen = [], {primary}
    for value in found.values:
        locations = found.locations.get(value.index)
        if locations is not None:
            for loc in locations.locations:
                if loc.href not in seen:
                    seen.add(loc.href)
                    label = loc.attribute("title")
                    links.append({"href": loc.href, "host": _host(loc.href), "label": label, "field": None})
            continue
        href = found.urls.get(value.index)
        if href is None or href in seen or not (value.index in fields or is_url_type(value.type)):
            continue
        seen.add(href)
        field = fields.get(value.index)
        label = None if field is not None else value.type.partition(".")[2] or None
        links.append({"href": href, "host": _host(href), "label": label, "field": field})
    return links


def _others(found: Destinations, skip: set[int]) -> list[dict[str, Any]]:
    """Values the caller may see that are neither links, template fields nor administrative values."""
    rows = []
    for value in found.values:
        kind = value.type.upper()
        if value.index in skip or value.index == TEMPLATE_INDEX or is_url_type(kind):
            continue
        if kind.startswith(_HIDDEN_TYPES):
            continue
        rows.append({"index": value.index, "type": value.type, "text": _shown(value), "size": len(value.data)})
    return rows


def landing_context(
    *,
    handle: str,
    found: Destinations,
    template: Template | None,
    registration: Registration,
    node_prefix: str,
    alias_of: str | None = None,
) -> dict[str, Any]:
    """The landing page of ``handle`` from the values the caller may see (``found``)."""
    primary = found.default_url
    if primary is None and found.all_locations is not None:
        primary = max(found.all_locations.locations, key=lambda loc: loc.weight).href
    fields, names = _fields(found, template)
    title = next((f["text"] for f in fields if f["text"] and f["name"].strip().casefold() in TITLE_FIELDS), None)
    changed = max((v.timestamp for v in found.values), default=0)
    enterprise = registration.enterprise
    path = handle_path(handle)
    return {
        "handle": handle,
        "title": title,
        "alias_of": alias_of,
        "alias_to": found.alias,  # an alias the proxy did not follow (another node's, or ignore_aliases)
        "enterprise": (
            {"name": enterprise.name, "uscc": enterprise.uscc, "prefix": enterprise.prefix} if enterprise else None
        ),
        "node_prefix": node_prefix,
        "registered": _instant(registration.created_at),
        "changed": _instant(changed),
        "primary": {"href": primary, "host": _host(primary)} if primary else None,
        "links": _links(found, primary, names),
        "fields": fields,
        "others": _others(found, set(names)),
        "template": (
            {"id": template.id, "version": template.version, "description": template.description} if template else None
        ),
        "json_link": "/api/handles" + path,
        "page_path": path,
        "language_links": {code: f"{path}?noredirect&lang={code}" for code in ("zh", "en")},
    }


_KINDS = {
    RC_HANDLE_NOT_FOUND: "not-found",
    RC_INVALID_HANDLE: "invalid",
    RC_SERVER_NOT_RESP: "elsewhere",
    RC_RECURSION_COUNT_TOO_HIGH: "alias-loop",
}


def home_context(
    node_prefix: str,
    *,
    entered: str = "",
    noredirect: bool = False,
    code: int | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """The home page: what this node is, and a form to resolve an identifier (with what was typed
    and what is wrong with it, when it was refused)."""
    return {
        "node_prefix": node_prefix,
        "entered": entered,
        "noredirect": noredirect,
        "kind": _KINDS.get(code, "other") if code is not None else None,
        "message": message,
        "example": f"{node_prefix}.1001/SKU-2025-000001",
    }


def error_context(node_prefix: str, *, status: int, code: int, message: str, handle: str | None) -> dict[str, Any]:
    """The error page of a handle's URL: what went wrong in words for people (by responseCode), the
    node's message, and the resolve form with the identifier again."""
    return {
        "status": status,
        "code": code,
        "kind": _KINDS.get(code, "other"),
        "message": message,
        "handle": (handle or "")[:300],
        "node_prefix": node_prefix,
        "example": f"{node_prefix}.1001/SKU-2025-000001",
        "entered": (handle or "")[:300],
        "noredirect": False,
    }
