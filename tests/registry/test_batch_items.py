"""The common batch item (registry.batch_items): decoded only in its exact shape, and packed into
the record the general path (parse_values + plan_write) would write, or left to that path."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from registry.auth import Caller
from registry.batch_items import HANDLE_CONTROL, ITEM_DECODER, ItemPacker
from registry.jsonvalues import ValueLimits, parse_values
from registry.model import _CONTROL, HandleValue, parse_handle
from registry.packing import pack_tail
from registry.valuedata import encode_admin
from registry.write_plan import Mode, PlanContext, WriteRequest, plan_write

NOW = 1_760_000_000
ADMIN = HandleValue(100, "HS_ADMIN", encode_admin("0.NA/88.118.8.1001", 300, 0xFFF), timestamp=NOW)
LIMITS = ValueLimits(max_values=5, max_data_bytes=64, max_type_length=16)
H = "88.118.8.1001/SKU-1"


def general_tail(handle: str, values: list[dict[str, Any]], limits: ValueLimits = LIMITS) -> bytes:
    """What the general path writes for the item: its parsed values planned as a new handle."""
    parsed = parse_values(values, limits, timestamp=NOW)
    ctx = PlanContext(Caller(), NOW, limits.max_values, "0.NA/88.118.8", ADMIN)
    plan = plan_write(None, WriteRequest(parse_handle(handle), Mode.CREATE, tuple(parsed)), ctx)
    assert plan.values is not None
    return pack_tail(plan.handle, plan.values)


def fast_tail(handle: str, values: list[dict[str, Any]]) -> bytes | None:
    item = ITEM_DECODER.decode(json.dumps({"handle": handle, "values": values}).encode())
    return ItemPacker(LIMITS, NOW, ADMIN).tail(item.handle, item.values)


@pytest.mark.parametrize(
    "values",
    [
        [],
        [{"index": 1, "type": "URL", "data": "https://example.com/p/1"}],
        [{"index": 7, "type": "DESC", "data": "产品 ✓ 🚀 ünï"}, {"index": 2, "type": "EMAIL", "data": ""}],
        [{"index": 4294967295, "type": "X" * 16, "data": "d" * 64}],
    ],
)
def test_the_common_shape_is_packed_as_the_general_path_plans_it(values: list[dict[str, Any]]) -> None:
    assert fast_tail(H, values) == general_tail(H, values)


@pytest.mark.parametrize(
    "value",
    [
        {"index": 0, "type": "URL", "data": "x"},  # out of range
        {"index": 4294967296, "type": "URL", "data": "x"},
        {"index": 100, "type": "URL", "data": "x"},  # where the default HS_ADMIN goes
        {"index": 1001, "type": "URL", "data": "x"},  # a template reference
        {"index": 1, "type": "HS_ADMIN", "data": "x"},  # typed data, or checked by the planner
        {"index": 1, "type": "hs_seckey", "data": "x"},
        {"index": 1, "type": "HS_SITE", "data": "x"},
        {"index": 1, "type": "", "data": "x"},
        {"index": 1, "type": " URL", "data": "x"},
        {"index": 1, "type": "U\tRL", "data": "x"},
        {"index": 1, "type": "X" * 17, "data": "x"},  # over the node's limits
        {"index": 1, "type": "URL", "data": "d" * 65},
        {"index": 1, "type": "URL", "data": "é" * 33},  # 66 bytes
    ],
)
def test_anything_else_takes_the_general_path(value: dict[str, Any]) -> None:
    assert fast_tail(H, [value]) is None


def test_repeated_indexes_and_too_many_values_take_the_general_path() -> None:
    v = {"index": 1, "type": "URL", "data": "x"}
    assert fast_tail(H, [v, v]) is None
    many = [{"index": n, "type": "URL", "data": "x"} for n in range(1, 5)]
    assert fast_tail(H, many[:3]) is not None  # 3 + the default HS_ADMIN: 4 of 5
    assert fast_tail(H, many) is not None  # 5 of 5
    assert fast_tail(H, [*many, {"index": 9, "type": "URL", "data": "x"}]) is None


@pytest.mark.parametrize(
    "line",
    [
        b'{"handle":"a/b","values":[],"x":1}',  # another field
        b'{"handle":"a/b","values":[{"index":1,"type":"URL","data":"x","ttl":5}]}',
        b'{"handle":"a/b","values":[{"index":1.0,"type":"URL","data":"x"}]}',
        b'{"handle":"a/b","values":[{"index":true,"type":"URL","data":"x"}]}',
        b'{"handle":"a/b","values":[{"index":1,"type":"URL","data":{"format":"string","value":"x"}}]}',
        b'{"handle":"a/b","values":[{"index":1,"type":"URL","data":"\\ud800"}]}',  # a lone surrogate
        b'{"handle":"a/b","values":[]} {"handle":"a/c","values":[]}',  # two values
        b'{"handle":"a/b","values":[]}\x0b',
        b'\xef\xbb\xbf{"handle":"a/b","values":[]}',
        b'{"handle":1,"values":[]}',
    ],
)
def test_the_decoder_takes_the_exact_shape_only(line: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        ITEM_DECODER.decode(line)


def test_duplicate_keys_keep_the_last_as_json_does() -> None:
    line = b'{"handle":"a/b","handle":"a/c","values":[]}'
    assert ITEM_DECODER.decode(line).handle == json.loads(line)["handle"] == "a/c"


def test_handle_control_characters_are_the_models() -> None:
    assert HANDLE_CONTROL.pattern == _CONTROL.pattern
