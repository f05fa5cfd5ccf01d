"""HANDLE.NET's multiple-location values (type ``10320/loc``): parsing and choosing, pure.

The data is a small XML document::

    <locations chooseby="locatt,weighted">
      <location href="https://cn.example.com/p/1" weight="1" country="cn" view="mobile" />
      <location href_template="https://mirror.example.com/?id={hdl}" weight="0.5" />
    </locations>

Each ``location`` (or the older ``loc_template``) names a target (``href``, or ``href_template`` with
``{hdl}`` / ``{hdl:path}`` replaced by the handle) and any attributes. The proxy narrows the locations
step by step in the order of ``chooseby`` (default ``locatt, address, country, score, weighted``), as
HANDLE.NET's proxy does:

- ``locatt``: each ``locatt=key:value`` of the request (or ``locatt=key``: the attribute is present)
  keeps the locations that match, when any do;
- ``address``: locations whose ``addresses`` (CIDR ranges, comma-separated) hold the client's address;
- ``country``: not applied (the node has no address-to-country database);
- ``score``: the locations with the highest ``score``;
- ``weighted``: a random choice by ``weight`` (default 1, negatives count as 0; all zero: uniform).

A single location left is the answer at once. Locations whose target is no http(s) URL are dropped
when parsed, so no choice can lead anywhere else. The parser refuses document type declarations
(no entities: no expansion attacks) and reads at most :data:`MAX_LOCATIONS` locations.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote
from xml.parsers import expat

from resolver.proxy.urls import safe_url, value_text

__all__ = ["LOC_TYPE", "MAX_LOCATIONS", "Location", "LocationSet", "choose", "parse_locations"]

LOC_TYPE = "10320/loc"
MAX_LOCATIONS = 100
MAX_LOCATT = 8  # locatt parameters a request may carry
DEFAULT_CHOOSE_BY = ("locatt", "address", "country", "score", "weighted")
_LOCATION_TAGS = frozenset({"location", "loc_template"})
_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class Location:
    href: str  # a safe URI (see resolver.proxy.urls.safe_url)
    weight: float
    attributes: tuple[tuple[str, str], ...]

    def attribute(self, key: str) -> str | None:
        for name, value in self.attributes:
            if name == key:
                return value
        return None

    @property
    def score(self) -> float:
        return _number(self.attribute("score"), 0.0)


@dataclass(frozen=True, slots=True)
class LocationSet:
    locations: tuple[Location, ...]
    choose_by: tuple[str, ...] = DEFAULT_CHOOSE_BY

    def __add__(self, other: LocationSet) -> LocationSet:
        """Locations of several values together; the first value's ``chooseby`` applies."""
        return LocationSet((self.locations + other.locations)[:MAX_LOCATIONS], self.choose_by)


class _Refused(Exception):
    pass


def _number(text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        number = float(text.strip())
    except ValueError:
        return default
    return number if math.isfinite(number) else default


def _template(template: str, handle: str) -> str:
    return template.replace("{hdl}", quote(handle, safe="")).replace("{hdl:path}", quote(handle, safe="/"))


def parse_locations(data: bytes, handle: str) -> LocationSet | None:
    """The locations of one ``10320/loc`` value, or None when its data is no such document."""
    text = value_text(data)
    if text is None:
        return None
    parser = expat.ParserCreate()
    depth = 0
    root: dict[str, str] | None = None
    found: list[Location] = []

    def refuse(*_: object) -> None:
        raise _Refused

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth, root
        depth += 1
        if depth == 1:
            root = attrs
        elif depth == 2 and tag.lower() in _LOCATION_TAGS and len(found) < MAX_LOCATIONS:
            href = attrs.get("href")
            if href is None and "href_template" in attrs:
                href = _template(attrs["href_template"], handle)
            target = safe_url(href)
            if target is not None:
                weight = max(0.0, _number(attrs.get("weight"), 1.0))
                found.append(Location(target, weight, tuple(attrs.items())))

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(text, True)
    except (expat.ExpatError, _Refused, ValueError):
        return None
    if root is None:
        return None
    raw = root.get("choose_by", root.get("chooseby"))
    steps = tuple(s.strip().lower() for s in raw.split(",") if s.strip()) if raw is not None else DEFAULT_CHOOSE_BY
    return LocationSet(tuple(found), steps)


def _by_locatt(locations: list[Location], wanted: str) -> list[Location]:
    key, colon, value = wanted.partition(":")
    key = key.strip()
    out = []
    for loc in locations:
        have = loc.attribute(key)
        if have is not None and (not colon or have == value):
            out.append(loc)
    return out


def _by_address(locations: list[Location], client: str | None) -> list[Location]:
    """Locations whose ``addresses`` hold the client (an address, or an IPv6 /64 as the node counts
    clients: then the range must hold the whole /64)."""
    if client is None:
        return []
    try:
        where = ipaddress.ip_network(client, strict=False)
    except ValueError:
        return []
    out = []
    for loc in locations:
        for cidr in (loc.attribute("addresses") or "").split(",")[:32]:
            try:
                network = ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                continue
            if network.version == where.version and where.subnet_of(network):  # type: ignore[arg-type]
                out.append(loc)
                break
    return out


def _weighted(locations: list[Location], rng: random.Random) -> Location:
    total = sum(loc.weight for loc in locations)
    if total <= 0:
        return locations[rng.randrange(len(locations))]
    point = rng.random() * total
    for loc in locations:
        point -= loc.weight
        if point < 0:
            return loc
    return next(loc for loc in reversed(locations) if loc.weight > 0)


def choose(
    found: LocationSet,
    *,
    locatt: Sequence[str] = (),
    client: str | None = None,
    rng: random.Random | None = None,
) -> Location | None:
    """The location a request is sent to (None when there is none)."""
    locations = list(found.locations)
    rng = rng or _RNG
    for step in found.choose_by:
        if len(locations) <= 1:
            break
        if step == "locatt":
            for wanted in list(locatt)[:MAX_LOCATT]:
                narrowed = _by_locatt(locations, wanted)
                locations = narrowed or locations
        elif step == "address":
            locations = _by_address(locations, client) or locations
        elif step == "score":
            best = max(loc.score for loc in locations)
            locations = [loc for loc in locations if loc.score == best]
        elif step == "weighted":
            return _weighted(locations, rng)
    if not locations:
        return None
    return locations[0] if len(locations) == 1 else _weighted(locations, rng)
