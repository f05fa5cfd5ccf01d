"""Compact msgpack encoding of a record, used by the stores and by the Redis cache tier.

Layout: ``[FORMAT, version, handle, [[index, type, data, ttl, ttl_absolute, timestamp, perms,
[[ref_handle, ref_index], ...]], ...]]``. Values stay positional so that decoding is one pass.
"""

from __future__ import annotations

import msgpack

from registry.model import HandleValue, Record, Reference

__all__ = ["PackError", "pack_head", "pack_record", "pack_tail", "pack_values", "unpack_record", "unpack_values"]

FORMAT = 1


class PackError(ValueError):
    """Bytes that are not a packed record (a corrupt cache entry, another program's key)."""


def _value_row(v: HandleValue) -> list:
    refs = [[r.handle, r.index] for r in v.references]
    return [v.index, v.type, v.data, v.ttl, v.ttl_absolute, v.timestamp, v.permissions, refs]


def pack_values(values: tuple[HandleValue, ...] | list[HandleValue]) -> bytes:
    return msgpack.packb([_value_row(v) for v in values], use_bin_type=True)


def _values_from_rows(rows: list) -> tuple[HandleValue, ...]:
    out = []
    for index, type_, data, ttl, ttl_abs, ts, perms, refs in rows:
        out.append(
            HandleValue(
                index=index,
                type=type_,
                data=data,
                ttl=ttl,
                ttl_absolute=ttl_abs,
                timestamp=ts,
                permissions=perms,
                references=tuple(Reference(h, i) for h, i in refs) if refs else (),
            )
        )
    return tuple(out)


def unpack_values(blob: bytes) -> tuple[HandleValue, ...]:
    try:
        return _values_from_rows(msgpack.unpackb(blob, raw=False))
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise PackError(f"not packed handle values: {exc}") from None


def pack_record(record: Record) -> bytes:
    rows = [_value_row(v) for v in record.values]
    return msgpack.packb([FORMAT, record.version, record.handle, rows], use_bin_type=True)


def pack_head(version: int) -> bytes:
    """The bytes a packed record starts with, up to and including its version: ``pack_head(v) +
    pack_tail(h, vs)`` is ``pack_record(Record(h, vs, v))``, so a record can be packed before its
    version is known (tests/registry/test_rows.py checks the splice)."""
    return b"\x94" + msgpack.packb(FORMAT) + msgpack.packb(version)


def pack_tail(handle: str, values: tuple[HandleValue, ...] | list[HandleValue]) -> bytes:
    """The bytes of a packed record after its version (see :func:`pack_head`)."""
    return msgpack.packb(handle, use_bin_type=True) + pack_values(values)


def unpack_record(blob: bytes) -> Record:
    try:
        fmt, version, handle, rows = msgpack.unpackb(blob, raw=False)
        if fmt != FORMAT:
            raise PackError(f"unknown record format {fmt!r}")
        return Record(handle=handle, values=_values_from_rows(rows), version=version)
    except PackError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise PackError(f"not a packed record: {exc}") from None
