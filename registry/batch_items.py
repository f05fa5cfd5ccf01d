"""The common batch item, decoded, checked and packed in one pass.

Nearly every item of a large batch is ``{"handle": "<prefix>/<suffix>", "values": [{"index": 1,
"type": "URL", "data": "…"}, …]}``: plain values (no TTL, permissions or references), a new handle,
the default HS_ADMIN. :data:`ITEM_DECODER` (msgspec, compiled) decodes exactly that shape straight
from the NDJSON bytes; anything else (another field, another type, a lone surrogate, bad JSON) makes
it refuse the item, which then takes the general path (``json``, :func:`registry.jsonvalues.parse_values`,
:class:`registry.writes.BatchPlanner`) and gets that path's answer, error messages included.

:class:`ItemPacker` checks the values of such an item against what the general path would decide
for them and packs the new record's tail (:func:`registry.packing.pack_tail`) with the default
HS_ADMIN appended, as :func:`registry.write_plan.plan_write` plans a new handle; it answers None
(take the general path) for anything the general path would refuse or treat specially: an index
out of range or repeated, the HS_ADMIN's own index, a template reference, a type with typed data
(HS_ADMIN, HS_SECKEY, …), a type or data over the node's limits, too many values. So an item gets
the same record, or the same refusal, whichever path it takes (tests/registry/test_batch_items.py).
"""

from __future__ import annotations

import re

import msgspec

from registry.jsonvalues import ValueLimits
from registry.model import DEFAULT_PERMISSIONS, DEFAULT_TTL, MAX_INDEX, HandleValue
from registry.packing import FORMAT, pack_values
from registry.templates import TEMPLATE_INDEX

__all__ = ["HANDLE_CONTROL", "ITEM_DECODER", "Item", "ItemPacker", "ItemValue"]


# gc=False: decoded items hold only strings, ints and a list of values, so they can be in no
# reference cycle; untracked, 100,000 of them cost the decoder ~10 % less.
class ItemValue(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    index: int
    type: str
    data: str


class Item(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    handle: str
    values: list[ItemValue]


ITEM_DECODER = msgspec.json.Decoder(Item)

# Types whose data is not plain text, or that the planner checks (HS_ADMIN, HS_SECKEY): general path.
_TYPED = frozenset({"HS_ADMIN", "HS_VLIST", "HS_SITE", "HS_SITE.PREFIX", "HS_PUBKEY", "HS_SECKEY"})
_CONTROL = re.compile(r"[\x00-\x1f]")  # in a value's type (registry.jsonvalues)
HANDLE_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # in a handle (registry.model.parse_handle)


class ItemPacker:
    """Checks and packs the values of common items for new handles of one batch, all stamped ``now``
    and given ``admin`` (the batch's default HS_ADMIN, at ``admin.index``)."""

    def __init__(self, limits: ValueLimits, now: int, admin: HandleValue) -> None:
        self._limits = limits
        self._now = now
        self._admin_index = admin.index
        self._admin = msgspec.Raw(pack_values([admin])[1:])  # its row, without the array header
        self._encode = msgspec.msgpack.Encoder().encode
        self._types: dict[str, bool] = {}  # type → acceptable here

    def _type_ok(self, kind: str) -> bool:
        limits = self._limits
        ok = (
            bool(kind)
            and len(kind) <= limits.max_type_length
            and kind.upper() not in _TYPED
            and kind.strip() == kind
            and not _CONTROL.search(kind)
        )
        if len(self._types) < 1024:
            self._types[kind] = ok
        return ok

    def tail(self, handle: str, values: list[ItemValue]) -> bytes | None:
        """The packed tail of the new record for ``handle`` with ``values``, or None: general path."""
        limits = self._limits
        if len(values) >= limits.max_values:  # the default HS_ADMIN makes one more
            return None
        now, admin_index, types = self._now, self._admin_index, self._types
        max_data = limits.max_data_bytes
        rows: list[object] = []
        seen: set[int] = set()
        for v in values:
            index, kind = v.index, v.type
            if not 0 < index <= MAX_INDEX or index in (admin_index, TEMPLATE_INDEX) or index in seen:
                return None
            ok = types.get(kind)
            if ok is None:
                ok = self._type_ok(kind)
            if not ok:
                return None
            data = v.data.encode("utf-8")  # msgspec decodes only valid UTF-8: no lone surrogates
            if len(data) > max_data:
                return None
            seen.add(index)
            rows.append((index, kind, data, DEFAULT_TTL, False, now, DEFAULT_PERMISSIONS, ()))
        rows.append(self._admin)
        # The whole record at version 0, then what follows [FORMAT, 0 (three bytes): the tail.
        return self._encode((FORMAT, 0, handle, rows))[3:]
