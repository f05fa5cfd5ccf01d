"""The RFC 9264 JSON linkset of a handle (``application/linkset+json``), pure.

One link context object, anchored at the URL the request named (a handle's URL on this node, or a GS1
Digital Link URI that maps to it), holding the handle's URL-like values the caller may see:

- every ``URL`` value (and ``URL.*`` subtype): relation ``describedby``; a subtype's name is its title;
- every location of a ``10320/loc`` value: the relation its ``rel`` attribute names, else
  ``describedby``; ``title``, ``hreflang`` and ``media-type`` attributes become target attributes;
- every metadata-template field whose data is a URL: the relation the field's name is, if it is one
  (a registered relation such as ``license``, an absolute URI, or a GS1 link type written
  ``gs1:pip``, expanded to ``https://gs1.org/voc/pip``), else ``describedby``, titled with the name;
- the target the proxy sends a plain request to (the lowest-index URL value, else the heaviest
  location) also under ``https://gs1.org/voc/defaultLink``, as GS1 resolvers name it.

Relation types that are not registered are URIs, as RFC 9264 requires. No links: ``{"linkset": []}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from resolver.proxy.targets import Destinations, is_url_type

__all__ = ["DEFAULT_LINK", "GS1_VOCABULARY", "linkset", "relation_of"]

GS1_VOCABULARY = "https://gs1.org/voc/"
DEFAULT_LINK = GS1_VOCABULARY + "defaultLink"
DESCRIBED_BY = "describedby"
# IANA link relations (RFC 8288 registry) a field or location is likely to name.
REGISTERED = frozenset(
    {
        "about", "alternate", "author", "canonical", "cite-as", "collection", "copyright", "describedby",
        "describes", "help", "icon", "item", "latest-version", "license", "manifest", "privacy-policy",
        "related", "service", "service-desc", "service-doc", "terms-of-service", "type", "via",
    }
)  # fmt: skip
_GS1_TERM = re.compile(r"gs1:([A-Za-z][A-Za-z0-9]{0,63})")
_URI = re.compile(r"https?://[^\s\"<>]{1,500}")


def relation_of(name: str | None) -> str | None:
    """The link relation ``name`` is (``gs1:pip`` expanded), or None when it is none."""
    if not name:
        return None
    text = name.strip()
    if text.lower() in REGISTERED:
        return text.lower()
    term = _GS1_TERM.fullmatch(text)
    if term:
        return GS1_VOCABULARY + term.group(1)
    return text if _URI.fullmatch(text) else None


def _target(href: str, title: str | None = None, hreflang: str | None = None, media: str | None = None):
    target: dict[str, Any] = {"href": href}
    if title:
        target["title"] = title
    if hreflang:
        target["hreflang"] = [hreflang]
    if media:
        target["type"] = media
    return target


def linkset(anchor: str, found: Destinations, field_names: Mapping[int, str]) -> dict[str, Any]:
    """The linkset document of ``found`` (the values the caller may see) at ``anchor``."""
    links: dict[str, list[dict[str, Any]]] = {}

    def add(relation: str, target: dict[str, Any]) -> None:
        targets = links.setdefault(relation, [])
        if all(t["href"] != target["href"] for t in targets):
            targets.append(target)

    default = found.default_url
    if default is None and found.all_locations is not None:
        heaviest = max(found.all_locations.locations, key=lambda loc: loc.weight)
        default = heaviest.href
    if default is not None:
        add(DEFAULT_LINK, _target(default))
    for value in found.values:
        locations = found.locations.get(value.index)
        if locations is not None:
            for loc in locations.locations:
                relation = relation_of(loc.attribute("rel")) or DESCRIBED_BY
                attributes = (loc.attribute("title"), loc.attribute("hreflang"), loc.attribute("media-type"))
                add(relation, _target(loc.href, *attributes))
            continue
        href = found.urls.get(value.index)
        if href is None:
            continue
        name = field_names.get(value.index)
        if name is not None:
            add(relation_of(name) or DESCRIBED_BY, _target(href, name))
        elif is_url_type(value.type):
            add(DESCRIBED_BY, _target(href, value.type if "." in value.type else None))
    if not links:
        return {"linkset": []}
    return {"linkset": [{"anchor": anchor, **links}]}
