"""The one rule for client numbers, instants and JSON texts (registry.inputs)."""

from __future__ import annotations

import datetime as dt

import pytest

from registry.errors import InvalidRequest, InvalidValue
from registry.inputs import (
    MAX_ID,
    MAX_U32,
    as_uint,
    decode_json,
    has_unpaired_surrogate,
    json_problem,
    parse_date,
    parse_instant,
    parse_uint,
)


@pytest.mark.parametrize("text", ["²", "١٢", "+1", "-1", " 1", "1_000", "", "1" * 21, "1" * 5000, "0x10", "1.0"])
def test_parse_uint_refuses_anything_but_ascii_digits(text: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_uint(text, "index")
    assert exc.value.message.startswith("index must be")
    assert len(exc.value.message) < 200


def test_parse_uint_range_and_error_type() -> None:
    assert parse_uint("0", "n") == 0
    assert parse_uint(str(MAX_ID), "id") == MAX_ID
    with pytest.raises(InvalidRequest, match="from 0 to"):
        parse_uint(str(MAX_ID + 1), "id")
    with pytest.raises(InvalidValue, match="from 1 to 4294967295"):
        parse_uint("0", "index", minimum=1, maximum=MAX_U32, error=InvalidValue)


@pytest.mark.parametrize("value", [True, None, [], {}, "²", 1.5, float("nan"), -1, 2**64, "9" * 30])
def test_as_uint_refuses(value: object) -> None:
    with pytest.raises(InvalidRequest):
        as_uint(value, "promoter")


def test_as_uint_huge_int_is_refused_without_printing_it() -> None:
    with pytest.raises(InvalidRequest) as exc:
        as_uint(10**5000, "promoter")
    assert "a number that large" in exc.value.message


def test_as_uint_accepts_json_forms() -> None:
    assert as_uint(7, "n") == 7
    assert as_uint(7.0, "n") == 7
    assert as_uint(" 42 ", "n") == 42


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "yesterday", "２０２６-01-01", "1969-12-31"]
)
def test_parse_instant_refuses_out_of_range_and_garbage(text: str) -> None:
    with pytest.raises(InvalidRequest, match="as_of must"):
        parse_instant(text, "as_of")


@pytest.mark.parametrize(
    "text",
    [
        "20250101",
        "2025-W01-1",
        "2025-1-01",
        "２０２５-01-01",
        "2025-02-30",
        "2025-01-01T00:00",
        "",
        "1969-12-31",
        "9999-01-01",
        "9" * 5000,
    ],
)
def test_parse_date_refuses(text: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_date(text, "from")
    assert exc.value.message.startswith("from must")
    assert len(exc.value.message) < 200


def test_parse_date_forms() -> None:
    assert parse_date(" 2024-02-29 ", "to") == dt.date(2024, 2, 29)
    assert parse_date("1970-01-01", "to") == dt.date(1970, 1, 1)
    assert parse_date("9998-12-31", "to") == dt.date(9998, 12, 31)
    with pytest.raises(InvalidValue):
        parse_date("x", "day", error=InvalidValue)


def test_parse_instant_forms() -> None:
    want = dt.datetime(2026, 1, 14, 16, tzinfo=dt.UTC)
    assert parse_instant("2026-01-15T00:00:00+08:00", "t") == want
    assert parse_instant("2026-01-14T16:00:00Z", "t") == want
    assert parse_instant("2026-01-14T16:00:00", "t") == want
    assert parse_instant("2026-01-15", "t") == dt.datetime(2026, 1, 15, tzinfo=dt.UTC)


def test_decode_json_refuses_long_numbers_and_unpaired_surrogates() -> None:
    with pytest.raises(InvalidRequest, match="more than 4300 digits"):
        decode_json('{"index": ' + "1" * 5000 + "}")
    for text in ('"\\ud800"', '{"\\udfff": 1}', '["ok", {"a": "x\\uDC00"}]'):
        with pytest.raises(InvalidRequest, match="unpaired surrogate"):
            decode_json(text)
    with pytest.raises(InvalidRequest, match="malformed JSON: Expecting value"):
        decode_json("[")
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        decode_json("[" * 100_000 + "]" * 100_000)
    assert decode_json('{"a": "\\ud83d\\ude00", "n": 42}') == {"a": "😀", "n": 42}  # a pair is a character


def test_has_unpaired_surrogate_looks_only_inside_its_range() -> None:
    text = '{"a":"\\ud800"} {"b":1}'
    assert has_unpaired_surrogate(text, {"a": "\ud800"}, 0, 14)
    assert not has_unpaired_surrogate(text, {"b": 1}, 15)
    assert not has_unpaired_surrogate('"\\\\ud800"', "\\ud800")  # an escaped backslash, then text


def test_json_problem_words() -> None:
    assert json_problem(RecursionError()) == "nested too deeply"
    assert json_problem(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")) == "not valid UTF-8 (byte 0)"
    with pytest.raises(ValueError) as exc:
        int("1" * 5000)
    assert json_problem(exc.value) == "a number has more than 4300 digits"
