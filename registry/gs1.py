"""GS1 Digital Link URIs of trade items (primary key AI 01, the GTIN) and the handles they name.

Pure: no I/O. What the node does with them is in :mod:`registry.gs1_prefixes` (which enterprise
owns a GTIN) and ``resolver/http/gs1_routes.py`` (resolution).

The path (GS1 Digital Link URI Syntax 1.x, section 4, the ``gtin-path`` of its grammar; the
uncompressed form, at the root of the node)::

    /01/{gtin} [/22/{cpv}] [/10/{lot}] [/21/{serial}]        or        /01/{gtin}/235/{tpx}

- ``gtin``: 14 digits; GTIN-8, -12 and -13 are accepted too and padded with zeros on the left. The
  last digit is the GS1 mod-10 check digit of the others.
- key qualifiers, in that order, each at most once: 22 consumer product variant, 10 batch/lot, 21
  serial number (at most 20 characters each), or 235 alone (third-party controlled, serialised
  extension of the GTIN, at most 28). Their characters are GS1's set 82 (ASCII letters, digits
  and ``!"%&'()*+,-./:;<=>?_``), percent-encoded in the URI as needed.
- data attributes (expiry ``17``, …) and ``linkType`` / ``context`` stay in the query string,
  which this module does not read (URI Syntax 4.10).
- one trailing slash is tolerated (GS1-Conformant Resolver 1.2.0, 2.13).

Anything else is refused with :class:`~registry.errors.InvalidHandle` (HTTP 400, as the resolver
standard's 2.4.1 asks), with a message that says what is wrong.

The mapping to handles (README, "GS1 Digital Link"): an item's handle is ``{enterprise prefix}/``
followed by its canonical Digital Link path without the leading slash, each value percent-encoded
as the Digital Link writes it, so that a ``/`` inside a lot number can never be taken for a
separator. A serial number (21) or a TPX (235) identifies one unit together with the GTIN alone
(resolver standard 2.5.9, rule 2: links of a serialised item carry no 22 or 10), so their handles
leave out the variant and the lot. :meth:`DigitalLink.handle_suffixes` lists the handles a URI may
resolve to, most specific first: a resolver walks up from the unit to the batch to the product.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from registry.errors import InvalidHandle, InvalidRequest
from registry.inputs import shown

__all__ = [
    "COMPANY_PREFIX_LENGTHS",
    "CPV",
    "GTIN_AI",
    "LOT",
    "MAX_GS1_PREFIXES",
    "SERIAL",
    "TPX",
    "DigitalLink",
    "check_digit",
    "company_prefix_candidates",
    "normalise_gtin",
    "parse_company_prefix",
    "parse_digital_link",
]

GTIN_AI = "01"
CPV, LOT, SERIAL, TPX = "22", "10", "21", "235"
QUALIFIER_NAMES = {
    CPV: "consumer product variant (22)",
    LOT: "batch/lot number (10)",
    SERIAL: "serial number (21)",
    TPX: "third-party controlled serialised extension (235)",
}
MAX_LENGTHS = {CPV: 20, LOT: 20, SERIAL: 20, TPX: 28}
_ORDER = (CPV, LOT, SERIAL)  # the order of the qualifiers in a gtin-path
GTIN_LENGTHS = (8, 12, 13, 14)
COMPANY_PREFIX_LENGTHS = range(4, 13)  # GS1 company prefixes have 4 to 12 digits
MAX_GS1_PREFIXES = 100  # company prefixes one enterprise may register
# GS1 prefixes of restricted circulation numbers (GS1 General Specifications 1.4.2): numbers used
# inside one company or region, which no resolver can map to one owner.
_RESTRICTED = ("02", "04", "2")

CSET_82 = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
_DIGITS = re.compile(r"[0-9]+")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_MAX_RAW_SEGMENT = 3 * 28  # the longest value, every character percent-encoded


def check_digit(body: str) -> int:
    """The GS1 mod-10 check digit for ``body`` (the digits before it): weights 3 and 1 alternate
    from the right, starting with 3; the check digit brings the sum up to a multiple of ten."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return -total % 10


def normalise_gtin(text: str) -> str:
    """A GTIN-8, -12, -13 or -14 as 14 digits, its check digit verified; InvalidHandle otherwise."""
    if not text.isascii() or not _DIGITS.fullmatch(text):
        raise InvalidHandle(f"a GTIN is written in digits 0-9, got {shown(text)}")
    if len(text) not in GTIN_LENGTHS:
        raise InvalidHandle(f"a GTIN has 8, 12, 13 or 14 digits, got {len(text)}: {text[:20]}")
    gtin = text.zfill(14)
    expected = check_digit(gtin[:-1])
    if int(gtin[-1]) != expected:
        raise InvalidHandle(f"GTIN {text} has a wrong check digit: {gtin[-1]}, expected {expected}")
    return gtin


def _decode(segment: str, what: str) -> str:
    """One path segment, percent-decoded strictly (a malformed escape or invalid UTF-8 is refused)."""
    if len(segment) > _MAX_RAW_SEGMENT:
        raise InvalidHandle(f"the {what} is too long")
    if _BAD_ESCAPE.search(segment):
        raise InvalidHandle(f"malformed percent-encoding in the {what}")
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise InvalidHandle(f"the {what} is not valid UTF-8") from None


def _qualifier(ai: str, raw: str) -> str:
    what = QUALIFIER_NAMES[ai]
    value = _decode(raw, what)
    if not value:
        raise InvalidHandle(f"the {what} is empty")
    if len(value) > MAX_LENGTHS[ai]:
        raise InvalidHandle(f"the {what} has at most {MAX_LENGTHS[ai]} characters, got {len(value)}")
    bad = next((c for c in value if c not in CSET_82), None)
    if bad is not None:
        raise InvalidHandle(
            f"the {what} may hold only GS1 character set 82 (ASCII letters, digits and "
            f"!\"%&'()*+,-./:;<=>?_), not {shown(bad)}"
        )
    return value


def _encoded(value: str) -> str:
    """A value as the Digital Link writes it in a path: letters, digits, ``-``, ``.`` and ``_`` as
    they are, everything else percent-encoded (upper-case hex)."""
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class DigitalLink:
    """A parsed Digital Link of a trade item: the GTIN (14 digits) and its key qualifiers."""

    gtin: str
    cpv: str | None = None
    lot: str | None = None
    serial: str | None = None
    tpx: str | None = None

    @property
    def path(self) -> str:
        """The canonical path (``/01/…``): 14-digit GTIN, qualifiers in order, values encoded."""
        parts = [f"/{GTIN_AI}/{self.gtin}"]
        for ai, value in ((CPV, self.cpv), (LOT, self.lot), (SERIAL, self.serial), (TPX, self.tpx)):
            if value is not None:
                parts.append(f"/{ai}/{_encoded(value)}")
        return "".join(parts)

    def handle_suffixes(self) -> tuple[str, ...]:
        """The handle suffixes this link may resolve to, most specific first: the unit (21 or
        235), the batch of the variant (22 + 10), the batch (10), the variant (22), the product."""
        base = f"{GTIN_AI}/{self.gtin}"
        if self.tpx is not None:
            return (f"{base}/{TPX}/{_encoded(self.tpx)}", base)
        out: list[str] = []
        if self.serial is not None:
            out.append(f"{base}/{SERIAL}/{_encoded(self.serial)}")
        if self.cpv is not None and self.lot is not None:
            out.append(f"{base}/{CPV}/{_encoded(self.cpv)}/{LOT}/{_encoded(self.lot)}")
        if self.lot is not None:
            out.append(f"{base}/{LOT}/{_encoded(self.lot)}")
        if self.cpv is not None:
            out.append(f"{base}/{CPV}/{_encoded(self.cpv)}")
        out.append(base)
        return tuple(out)


def company_prefix_candidates(gtin: str) -> tuple[str, ...]:
    """The company prefixes that could own a 14-digit GTIN, longest first. A company prefix starts
    after the first digit (the indicator digit of a GTIN-14, the zero padding of shorter GTINs)."""
    return tuple(gtin[1 : 1 + n] for n in reversed(COMPANY_PREFIX_LENGTHS))


def parse_digital_link(path: str) -> DigitalLink:
    """The Digital Link in a request path (raw, still percent-encoded, without the query string)."""
    if path.endswith("/"):
        path = path[:-1]
    segments = path.split("/")
    if len(segments) < 3 or segments[0] != "" or segments[1] != GTIN_AI:
        raise InvalidHandle("a GS1 Digital Link of a trade item starts with /01/ and the GTIN")
    pairs = segments[1:]
    if len(pairs) % 2:
        raise InvalidHandle(f"a GS1 Digital Link path alternates AIs and values; {shown(pairs[-1])} has no value")
    if len(pairs) > 2 * (1 + len(_ORDER)):
        raise InvalidHandle("too many path segments: a GTIN takes at most 22, 10 and 21 after it")
    gtin = normalise_gtin(_decode(pairs[1], "GTIN"))
    found: dict[str, str] = {}
    last = -1
    for i in range(2, len(pairs), 2):
        ai = pairs[i]
        if ai == TPX:
            if len(pairs) != 4:
                raise InvalidHandle("a third-party controlled serialised extension (235) stands alone after the GTIN")
            return DigitalLink(gtin, tpx=_qualifier(TPX, pairs[i + 1]))
        if ai not in _ORDER:
            raise InvalidHandle(
                f"{shown(ai)} is not a key qualifier of a GTIN: the path takes 22, 10, 21 or 235 after "
                "/01/{gtin}; data attributes such as 17 (expiry) go in the query string (?17=…)"
            )
        position = _ORDER.index(ai)
        if ai in found:
            raise InvalidHandle(f"the {QUALIFIER_NAMES[ai]} appears twice")
        if position < last:
            raise InvalidHandle("key qualifiers go in the order 22, 10, 21")
        last = position
        found[ai] = _qualifier(ai, pairs[i + 1])
    return DigitalLink(gtin, cpv=found.get(CPV), lot=found.get(LOT), serial=found.get(SERIAL))


def parse_company_prefix(text: object) -> str:
    """A GS1 company prefix from a client: 4 to 12 ASCII digits, not a restricted circulation range.

    A U.P.C. company prefix is written with its leading 0 (``0036000`` for UPC ``036000``), as in
    the 14-digit GTIN; for a GTIN-8, which GS1 assigns item by item, the "prefix" is ``00000``
    followed by the GTIN-8's first seven digits."""
    if not isinstance(text, str):
        raise InvalidRequest("a GS1 company prefix is a string of digits")
    value = text.strip()
    if not value.isascii() or not _DIGITS.fullmatch(value) or len(value) not in COMPANY_PREFIX_LENGTHS:
        raise InvalidRequest(f"a GS1 company prefix is 4 to 12 digits 0-9, got {shown(text)}")
    if value.startswith(_RESTRICTED):
        raise InvalidRequest(
            f"{value} is a restricted circulation number range (GS1 prefixes 02, 04, 20-29): "
            "such numbers are not unique outside one company or region and cannot be resolved"
        )
    return value
