"""Handle names and handle values: frozen data, no I/O.

A handle is ``prefix/suffix`` (RFC 3650). The prefix is compared case-insensitively (ASCII only),
the suffix case-sensitively unless the node is configured otherwise. A handle value follows the
layout of RFC 3651 section 3.1: index, type, data (bytes), TTL, timestamp, permissions, references.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from registry.errors import InvalidHandle

__all__ = [
    "ADMIN_READ",
    "ADMIN_WRITE",
    "DEFAULT_PERMISSIONS",
    "DEFAULT_TTL",
    "MAX_INDEX",
    "PUBLIC_READ",
    "PUBLIC_WRITE",
    "HandleName",
    "HandleValue",
    "Record",
    "Reference",
    "is_prefix_handle",
    "parse_handle",
    "prefix_handle_of",
]

# Value permission bits (RFC 3651 section 3.1, "Permission").
PUBLIC_WRITE = 0x1
PUBLIC_READ = 0x2
ADMIN_WRITE = 0x4
ADMIN_READ = 0x8
DEFAULT_PERMISSIONS = ADMIN_READ | ADMIN_WRITE | PUBLIC_READ  # "1110"
DEFAULT_TTL = 86400
MAX_INDEX = 0xFFFFFFFF

NA_PREFIX = "0.NA"
# C0 controls and DEL never belong in a handle; "/" only separates prefix and suffix once.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PREFIX_SYNTAX = re.compile(r"^[^/\s]+$")


def _ascii_upper(text: str) -> str:
    """Upper-case ASCII letters only (RFC 3650: prefixes are ASCII case-insensitive)."""
    return text.translate(_ASCII_UPPER)


_ASCII_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


@dataclass(frozen=True, slots=True)
class HandleName:
    """A parsed handle. ``text`` is exactly what the client sent; ``key`` is the normalised form."""

    text: str
    prefix: str
    suffix: str
    key: str

    @property
    def is_prefix_handle(self) -> bool:
        return self.key.startswith(NA_PREFIX + "/")

    def __str__(self) -> str:
        return self.text


def parse_handle(text: str, *, max_length: int = 255, case_sensitive_suffix: bool = True) -> HandleName:
    """Parse and normalise a handle, raising :class:`InvalidHandle` (responseCode 102) when bad."""
    if not isinstance(text, str) or not text:
        raise InvalidHandle("Empty handle", text or None)
    if len(text) > max_length:
        raise InvalidHandle(f"Handle longer than {max_length} characters", text[:max_length] + "…")
    if _CONTROL.search(text):
        raise InvalidHandle("Handle contains control characters", text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidHandle("Handle is not valid UTF-8", None) from None
    prefix, sep, suffix = text.partition("/")
    if not sep or not prefix or not suffix:
        raise InvalidHandle("A handle is <prefix>/<suffix> with both parts non-empty", text)
    if not _PREFIX_SYNTAX.match(prefix) or prefix.startswith(".") or prefix.endswith(".") or ".." in prefix:
        raise InvalidHandle(f"Invalid prefix {prefix!r}", text)
    norm_prefix = _ascii_upper(prefix)
    if norm_prefix == NA_PREFIX:
        # 0.NA/<prefix> names a prefix, so its suffix is a prefix too: case-insensitive.
        if not _PREFIX_SYNTAX.match(suffix):
            raise InvalidHandle(f"Invalid prefix {suffix!r} in prefix handle", text)
        norm_suffix = _ascii_upper(suffix)
    else:
        norm_suffix = suffix if case_sensitive_suffix else _ascii_upper(suffix)
    return HandleName(text=text, prefix=prefix, suffix=suffix, key=f"{norm_prefix}/{norm_suffix}")


def normalise_prefix(prefix: str) -> str:
    """The comparison form of a prefix (without ``0.NA/``)."""
    return _ascii_upper(prefix)


def prefix_handle_of(prefix: str) -> str:
    """``88.118.8.1001`` → ``0.NA/88.118.8.1001``."""
    return f"{NA_PREFIX}/{prefix}"


def is_prefix_handle(key: str) -> bool:
    return key.startswith(NA_PREFIX + "/")


@dataclass(frozen=True, slots=True)
class Reference:
    handle: str
    index: int


@dataclass(frozen=True, slots=True)
class HandleValue:
    """One handle value. ``data`` holds the raw bytes as RFC 3651 encodes them for the type."""

    index: int
    type: str
    data: bytes
    ttl: int = DEFAULT_TTL
    ttl_absolute: bool = False
    timestamp: int = 0
    permissions: int = DEFAULT_PERMISSIONS
    references: tuple[Reference, ...] = ()

    @property
    def public_read(self) -> bool:
        return bool(self.permissions & PUBLIC_READ)

    @property
    def admin_read(self) -> bool:
        return bool(self.permissions & ADMIN_READ)

    def type_matches(self, wanted: str) -> bool:
        """HANDLE.NET type filter: exact (case-insensitive), or ``HS_SITE.`` matching subtypes."""
        mine = self.type.upper()
        want = wanted.upper()
        if want.endswith("."):
            return mine == want[:-1] or mine.startswith(want)
        return mine == want


@dataclass(frozen=True, slots=True)
class Record:
    """A stored handle: its display name, its values and a version that grows with every write."""

    handle: str
    values: tuple[HandleValue, ...]
    version: int = 0
    enterprise_id: int | None = field(default=None, compare=False)

    def value_at(self, index: int) -> HandleValue | None:
        for v in self.values:
            if v.index == index:
                return v
        return None

    @property
    def max_ttl(self) -> int:
        """The shortest relative TTL of the values: how long a cache may keep the record."""
        rel = [v.ttl for v in self.values if not v.ttl_absolute]
        return min(rel) if rel else DEFAULT_TTL
