"""Where a handle's values lead a browser: the proxy's choice of redirect target, pure.

:func:`destinations_of` reads the values a caller may see once (URL values, ``10320/loc``
locations, an ``HS_ALIAS``); :meth:`Destinations.target` then picks the target for one request:

- ``index=N``: the value at index N, if its data is a URL (or a ``10320/loc`` value: one of its
  locations);
- ``type=T``: the first value of type T (lowest index) whose data is a URL (or a ``10320/loc`` of
  that type);
- otherwise: a location of the ``10320/loc`` values when there are any, else the URL value with the
  lowest index (type ``URL`` before its subtypes ``URL.*``), as HANDLE.NET's proxy does.

Values whose data is no http(s) URL are never a target.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from registry.model import HandleValue
from resolver.proxy.locations import LOC_TYPE, LocationSet, choose, parse_locations
from resolver.proxy.urls import safe_url, value_text

__all__ = ["ALIAS_TYPE", "URL_TYPE", "Destinations", "destinations_of", "is_url_type"]

URL_TYPE = "URL"
ALIAS_TYPE = "HS_ALIAS"


def is_url_type(type_: str) -> bool:
    upper = type_.upper()
    return upper == URL_TYPE or upper.startswith(URL_TYPE + ".")


@dataclass(frozen=True)
class Destinations:
    values: tuple[HandleValue, ...]  # by index
    urls: dict[int, str] = field(default_factory=dict)  # index → safe URI, for every value whose data is one
    locations: dict[int, LocationSet] = field(default_factory=dict)  # index → a 10320/loc value's locations
    alias: str | None = None  # the HS_ALIAS value's handle (the one with the lowest index)
    default_url: str | None = None  # the URL value a plain request goes to when there are no locations
    all_locations: LocationSet | None = None  # the locations of every 10320/loc value, in index order

    def _of_value(self, value: HandleValue, locatt: Sequence[str], client: str | None, rng: random.Random | None):
        found = self.locations.get(value.index)
        if found is not None:
            chosen = choose(found, locatt=locatt, client=client, rng=rng)
            return chosen.href if chosen is not None else None
        return self.urls.get(value.index)

    def target(
        self,
        *,
        index: int | None = None,
        type_: str | None = None,
        locatt: Sequence[str] = (),
        client: str | None = None,
        rng: random.Random | None = None,
    ) -> str | None:
        """The URL this request is redirected to, or None (the landing page)."""
        if index is not None:
            value = next((v for v in self.values if v.index == index), None)
            return self._of_value(value, locatt, client, rng) if value is not None else None
        if type_ is not None:
            for value in self.values:
                if value.type_matches(type_):
                    found = self._of_value(value, locatt, client, rng)
                    if found is not None:
                        return found
            return None
        locations = self.all_locations
        if locations is not None:
            chosen = choose(locations, locatt=locatt, client=client, rng=rng)
            if chosen is not None:
                return chosen.href
        return self.default_url


def destinations_of(values: Sequence[HandleValue], handle: str) -> Destinations:
    """Read ``values`` (those the caller may see) once for every later choice."""
    ordered = tuple(sorted(values, key=lambda v: v.index))
    urls: dict[int, str] = {}
    locations: dict[int, LocationSet] = {}
    alias = None
    for value in ordered:
        kind = value.type.upper()
        if kind == LOC_TYPE.upper():
            parsed = parse_locations(value.data, handle)
            if parsed is not None:
                locations[value.index] = parsed
        elif kind == ALIAS_TYPE:
            if alias is None:
                alias = (value_text(value.data) or "").strip() or None
        else:
            url = safe_url(value_text(value.data)) if len(value.data) <= 8192 else None
            if url is not None:
                urls[value.index] = url
    exact = [v.index for v in ordered if v.type.upper() == URL_TYPE and v.index in urls]
    subtypes = [v.index for v in ordered if is_url_type(v.type) and v.index in urls]
    chosen = exact or subtypes
    sets = [found for _, found in sorted(locations.items()) if found.locations]
    merged = None
    for more in sets:
        merged = more if merged is None else merged + more
    return Destinations(ordered, urls, locations, alias, urls[chosen[0]] if chosen else None, merged)
