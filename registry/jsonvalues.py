"""Handle values in the JSON shapes of HANDLE.NET 9's ``/api/handles`` API, both directions."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from registry.errors import InvalidValue
from registry.inputs import MAX_U32, as_uint, is_uint_text, parse_instant
from registry.model import DEFAULT_PERMISSIONS, DEFAULT_TTL, MAX_INDEX, HandleValue, Reference
from registry.valuedata import data_from_json, data_to_json

__all__ = [
    "MAX_ABSOLUTE_TTL",
    "MAX_RELATIVE_TTL",
    "ValueLimits",
    "parse_values",
    "value_from_json",
    "value_to_json",
    "values_to_json",
]

MAX_RELATIVE_TTL = 0x7FFFFFFF  # the native protocol's relative TTL: 4 signed bytes
MAX_ABSOLUTE_TTL = MAX_U32  # its absolute TTL: 4 unsigned bytes of UNIX seconds


@dataclass(frozen=True, slots=True)
class ValueLimits:
    max_values: int = 1000
    max_data_bytes: int = 65536
    max_type_length: int = 255
    max_references: int = 100


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _perm_string(p: int) -> str:
    return format(p & 0xF, "04b")


def value_to_json(v: HandleValue) -> dict[str, Any]:
    out: dict[str, Any] = {"index": v.index, "type": v.type, "data": data_to_json(v.type, v.data)}
    if v.permissions != DEFAULT_PERMISSIONS:
        out["permissions"] = _perm_string(v.permissions)
    out["ttl"] = _iso(v.ttl) if v.ttl_absolute else v.ttl
    if v.timestamp:
        out["timestamp"] = _iso(v.timestamp)
    if v.references:
        out["references"] = [{"handle": r.handle, "index": r.index} for r in v.references]
    return out


def values_to_json(values: Iterable[HandleValue]) -> list[dict[str, Any]]:
    return [value_to_json(v) for v in values]


def _int(value: Any, what: str, position: str, minimum: int = 0, maximum: int = MAX_U32) -> int:
    return as_uint(value, f"{position}: {what}", minimum=minimum, maximum=maximum, error=InvalidValue)


def _ttl(value: Any, position: str) -> tuple[int, bool]:
    """Seconds (relative), or an ISO 8601 time (absolute) the native protocol can carry: its
    absolute TTL is 4 unsigned bytes of UNIX seconds, so up to 2106-02-07T06:28:15Z."""
    if value is None:
        return DEFAULT_TTL, False
    if isinstance(value, str) and not is_uint_text(value.strip()):
        when = parse_instant(value, f"{position}: ttl", error=InvalidValue)
        seconds = int(when.timestamp())
        if seconds > MAX_ABSOLUTE_TTL:
            raise InvalidValue(
                f"{position}: ttl {value.strip()[:40]!r} is after {_iso(MAX_ABSOLUTE_TTL)}, "
                "the latest absolute TTL the Handle protocol carries"
            )
        return seconds, True
    return _int(value, "ttl", position, maximum=MAX_RELATIVE_TTL), False


def _permissions(value: Any, position: str) -> int:
    if value is None:
        return DEFAULT_PERMISSIONS
    if not isinstance(value, str) or len(value) != 4 or set(value) - {"0", "1"}:
        raise InvalidValue(f"{position}: permissions must be 4 characters of 0/1 (admin r/w, public r/w)")
    return int(value, 2)


_CONTROL = re.compile(r"[\x00-\x1f]")


def _fast_value(obj: dict, limits: ValueLimits, timestamp: int) -> HandleValue | None:
    """The common ``{"index": 1, "type": "URL", "data": "…"}`` shape, checked without the general
    machinery (batches of 100,000 spend most of their time here). None: take the general path."""
    if len(obj) != 3:
        return None
    idx, type_, data = obj.get("index"), obj.get("type"), obj.get("data")
    if type(idx) is not int or type(type_) is not str or not 0 < idx <= MAX_INDEX:
        return None
    if type(data) is dict and len(data) == 2 and data.get("format") == "string":
        data = data.get("value")
    if type(data) is not str or type_ in _TYPED or not type_ or len(type_) > limits.max_type_length:
        return None
    if type_.strip() != type_ or _CONTROL.search(type_):
        return None
    try:
        raw = data.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if len(raw) > limits.max_data_bytes:
        return None
    return HandleValue(idx, type_, raw, DEFAULT_TTL, False, timestamp, DEFAULT_PERMISSIONS, ())


_TYPED = frozenset({"HS_ADMIN", "HS_VLIST", "HS_SITE", "HS_SITE.PREFIX", "HS_PUBKEY", "HS_SECKEY"})


def value_from_json(
    obj: Any, position: str, limits: ValueLimits, index: int | None = None, timestamp: int = 0
) -> HandleValue:
    """One value from its JSON form. ``index`` is used when the object has none."""
    if type(obj) is dict and index is None:
        fast = _fast_value(obj, limits, timestamp)
        if fast is not None:
            return fast
    if not isinstance(obj, dict):
        raise InvalidValue(f"{position}: a handle value must be a JSON object")
    raw_index = obj.get("index", index)
    if raw_index is None:
        raise InvalidValue(f"{position}: value has no index")
    idx = _int(raw_index, "index", position, minimum=1, maximum=MAX_INDEX)
    type_ = obj.get("type")
    if not isinstance(type_, str) or not type_.strip():
        raise InvalidValue(f"{position}: value type must be a non-empty string")
    if len(type_) > limits.max_type_length or any(ord(ch) < 32 for ch in type_):
        raise InvalidValue(f"{position}: value type too long or with control characters")
    if "data" not in obj:
        raise InvalidValue(f"{position}: value has no data")
    data = data_from_json(type_, obj["data"])
    if len(data) > limits.max_data_bytes:
        raise InvalidValue(f"{position}: data is {len(data)} bytes, the limit is {limits.max_data_bytes}")
    ttl, absolute = _ttl(obj.get("ttl"), position)
    refs_raw = obj.get("references") or []
    if not isinstance(refs_raw, list) or len(refs_raw) > limits.max_references:
        raise InvalidValue(f"{position}: references must be a list of at most {limits.max_references}")
    refs = []
    for r in refs_raw:
        if not isinstance(r, dict) or not isinstance(r.get("handle"), str):
            raise InvalidValue(f'{position}: a reference is {{"handle": …, "index": …}}')
        refs.append(Reference(r["handle"], _int(r.get("index", 0), "reference index", position, maximum=MAX_INDEX)))
    return HandleValue(
        index=idx,
        type=type_,
        data=data,
        ttl=ttl,
        ttl_absolute=absolute,
        timestamp=timestamp,
        permissions=_permissions(obj.get("permissions"), position),
        references=tuple(refs),
    )


def parse_values(body: Any, limits: ValueLimits, *, timestamp: int = 0) -> list[HandleValue]:
    """The values of a PUT body: ``{"values": […]}``, a bare array of values, or one value.

    Values without an index get the lowest free index. Duplicate indexes are refused (202)."""
    if isinstance(body, dict) and "values" in body:
        items = body["values"]
    elif isinstance(body, dict):
        items = [body]
    else:
        items = body
    if not isinstance(items, list):
        raise InvalidValue("values must be a JSON array of handle values")
    if len(items) > limits.max_values:
        raise InvalidValue(f"{len(items)} values; a handle may hold at most {limits.max_values}")
    out: list[HandleValue] = []
    seen: set[int] = set()
    used: set[int] | None = None  # indexes taken, computed only when a value lacks one
    next_free = 1
    for n, obj in enumerate(items):
        auto = None
        if isinstance(obj, dict) and obj.get("index") is None:
            if used is None:
                used = set()
                for other in items:
                    try:
                        used.add(_int(other.get("index"), "index", ""))  # type: ignore[union-attr]
                    except (AttributeError, InvalidValue):
                        continue  # refused below, when that value's turn comes
            while next_free in used:
                next_free += 1
            auto = next_free
            used.add(auto)
        v = value_from_json(obj, f"value {n}", limits, auto, timestamp)
        if v.index in seen:
            raise InvalidValue(f"value {n}: index {v.index} appears more than once")
        seen.add(v.index)
        out.append(v)
    return out
