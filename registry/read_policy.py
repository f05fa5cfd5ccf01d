"""Which values of a record a caller is served: the one read policy of REST, native and web resolution.

Pure: the caller's right to read non-public values (``private_reader``) is decided by
:meth:`registry.callers.Callers.may_read_private`; this module only applies it with the request's filters.
How an interface words "nothing left" (REST responseCode 200, native VALUES_NOT_FOUND, a web page
without values) stays with the interface.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from registry.model import HandleValue

__all__ = ["ALL_PUBLIC", "ValueFilter", "public_values", "served_values"]


@dataclass(frozen=True, slots=True)
class ValueFilter:
    """A request's selection: values whose index is in ``indexes`` or whose type matches one of
    ``types`` (HANDLE.NET matching: case-insensitive, ``HS_SITE.`` takes subtypes); no selection
    means every value. ``public_only`` (REST ``publicOnly``) serves public values even to a reader of
    private ones."""

    types: tuple[str, ...] = ()
    indexes: frozenset[int] = frozenset()
    public_only: bool = False

    @property
    def selects(self) -> bool:
        return bool(self.types or self.indexes)

    def select(self, values: Iterable[HandleValue]) -> tuple[HandleValue, ...]:
        if not self.selects:
            return tuple(values)
        return tuple(v for v in values if v.index in self.indexes or any(v.type_matches(t) for t in self.types))


ALL_PUBLIC = ValueFilter()


def public_values(values: Sequence[HandleValue]) -> tuple[HandleValue, ...]:
    """The values anyone may read (PUBLIC_READ); the same tuple back when all of them are."""
    public = tuple(v for v in values if v.public_read)
    return values if isinstance(values, tuple) and len(public) == len(values) else public


def served_values(
    values: Sequence[HandleValue], *, private_reader: bool, request: ValueFilter = ALL_PUBLIC
) -> tuple[HandleValue, ...]:
    """The values served for ``request`` to a caller who may (``private_reader``) or may not read
    non-public values. RFC 3651 3.1: even a private reader gets a non-public value only when the
    value grants ADMIN_READ."""
    selected = request.select(values)
    if request.public_only or not private_reader:
        return public_values(selected)
    return tuple(v for v in selected if v.public_read or v.admin_read)
