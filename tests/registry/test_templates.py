"""Metadata templates (数据模板), pure: parsing a template body, versions that keep every field,
references at index 1001, and checking values against a template. No I/O."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import InvalidRequest, InvalidValue
from registry.model import HandleValue
from registry.templates import (
    FIELD_MIN_INDEX,
    TEMPLATE_INDEX,
    TEMPLATE_TYPE,
    Template,
    TemplateField,
    parse_template_ref,
    template_from_json,
    validate_against,
)

BODY: dict[str, Any] = {
    "description": "产品基本信息",
    "fields": [
        {"index": 2003, "name": "colour", "type": "COLOUR", "enum": ["red", "green", "蓝"]},
        {"index": 2001, "name": "model", "type": "MODEL", "required": True, "min_length": 2, "max_length": 6},
        {"index": 2002, "name": "batch", "type": "BATCH", "pattern": "B[0-9]{4}"},
    ],
}


def make(body: Any = None, *, version: int = 1, previous: Template | None = None, scope: str = "") -> Template:
    return template_from_json(BODY if body is None else body, id="sku", version=version, scope=scope, previous=previous)


def v(index: int, type_: str, data: str | bytes) -> HandleValue:
    return HandleValue(index=index, type=type_, data=data if isinstance(data, bytes) else data.encode())


def ref(text: str | bytes) -> HandleValue:
    return v(TEMPLATE_INDEX, TEMPLATE_TYPE, text)


def ok_values(**over: str | None) -> list[HandleValue]:
    data: dict[str, str | None] = {"model": "M100", "batch": "B0001", "colour": "red", **over}
    out = [v(1, "URL", "https://example.com/x"), ref("sku@1")]
    for index, (name, type_) in {
        2001: ("model", "MODEL"),
        2002: ("batch", "BATCH"),
        2003: ("colour", "COLOUR"),
    }.items():
        if data[name] is not None:
            out.append(v(index, type_, data[name]))  # type: ignore[arg-type]
    return out


# -- parsing a template ------------------------------------------------------------------------------
def test_a_template_from_json() -> None:
    t = make()
    assert (t.id, t.version, t.scope, t.description) == ("sku", 1, "", "产品基本信息")
    assert [f.index for f in t.fields] == [2001, 2002, 2003]  # sorted by index
    model = t.fields[0]
    assert model == TemplateField(2001, "model", "MODEL", required=True, min_length=2, max_length=6)
    assert t.fields[2].enum == ("red", "green", "蓝")
    j = t.to_json()
    assert j["scope"] == "node" and j["version"] == 1 and j["id"] == "sku"
    assert j["fields"][0] == {
        "index": 2001,
        "name": "model",
        "type": "MODEL",
        "required": True,
        "min_length": 2,
        "max_length": 6,
        "disabled": False,
    }
    assert make(scope="88.118.8.1001").to_json()["scope"] == "88.118.8.1001"


def test_names_and_types_are_trimmed_and_flags_default_false() -> None:
    t = make({"fields": [{"index": 2000, "name": " lot ", "type": " LOT "}]})
    (f,) = t.fields
    assert (f.index, f.name, f.type, f.required, f.disabled) == (FIELD_MIN_INDEX, "lot", "LOT", False, False)
    assert t.description == ""


def _field(**over: Any) -> dict[str, Any]:
    return {"fields": [{"index": 2001, "name": "model", "type": "MODEL", **over}]}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (None, "JSON object"),
        ([], "JSON object"),
        ({}, "fields"),
        ({"fields": []}, "fields"),
        ({"fields": {"index": 2001}}, "fields"),
        ({"fields": [{"index": 2000 + n, "name": f"f{n}", "type": "T"} for n in range(201)]}, "at most 200"),
        ({"fields": ["model"]}, "object"),
        (_field(index=1999), ">= 2000"),
        (_field(index=1), ">= 2000"),
        (_field(index="2001"), "index"),
        (_field(index=True), "index"),
        (_field(index=2001.0), "index"),
        (_field(index=2**32), "index"),
        (_field(name=""), "name"),
        (_field(name="   "), "name"),
        (_field(name="n" * 65), "name"),
        (_field(name=7), "name"),
        (_field(type=""), "type"),
        (_field(type=None), "type"),
        (_field(required="yes"), "required"),
        (_field(disabled=1), "disabled"),
        (_field(min_length=-1), "min_length"),
        (_field(max_length="5"), "max_length"),
        (_field(max_length=True), "max_length"),
        (_field(min_length=5, max_length=4), "min_length > max_length"),
        (_field(pattern="("), "invalid pattern"),
        (_field(pattern=5), "pattern"),
        (_field(pattern="a" * 501), "pattern"),
        (_field(enum=[]), "enum"),
        (_field(enum="red"), "enum"),
        (_field(enum=["red", 1]), "enum"),
        (_field(colour="red"), "unknown keys colour"),
        (
            {"fields": [{"index": 2001, "name": "a", "type": "T"}, {"index": 2001, "name": "b", "type": "T"}]},
            "unique",
        ),
        ({"fields": [{"index": 2001, "name": "a", "type": "T"}, {"index": 2002, "name": "a", "type": "T"}]}, "unique"),
        ({**BODY, "description": 5}, "description"),
        ({**BODY, "description": "d" * 1001}, "description"),
    ],
)
def test_invalid_template_bodies(body: Any, words: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        template_from_json(body, id="sku", version=1, scope="", previous=None)
    assert words in exc.value.message


@pytest.mark.parametrize("ident", ["", "-sku", "sku basic", "s" * 65, "sku@1", "产品", "sku/1"])
def test_invalid_template_ids(ident: str) -> None:
    with pytest.raises(InvalidRequest):
        template_from_json(BODY, id=ident, version=1, scope="", previous=None)


@pytest.mark.parametrize("ident", ["sku", "SKU-basic_2.0", "0", "s" * 64])
def test_valid_template_ids(ident: str) -> None:
    assert template_from_json(BODY, id=ident, version=1, scope="", previous=None).id == ident


# -- versions: fields are disabled, never deleted ---------------------------------------------------
def test_a_new_version_keeps_every_field_of_the_previous_one() -> None:
    v1 = make()
    without_batch = {"fields": [f for f in BODY["fields"] if f["name"] != "batch"]}
    with pytest.raises(InvalidRequest) as exc:
        make(without_batch, version=2, previous=v1)
    assert "batch" in exc.value.message and "disabled but not deleted" in exc.value.message

    disabled = {"fields": [{**f, "disabled": True} if f["name"] == "batch" else f for f in BODY["fields"]]}
    v2 = make(disabled, version=2, previous=v1)
    assert v2.version == 2 and {f.name: f.disabled for f in v2.fields}["batch"] is True

    grown = {"fields": [*disabled["fields"], {"index": 2004, "name": "lot", "type": "LOT"}]}
    v3 = make(grown, version=3, previous=v2)
    assert [f.index for f in v3.fields] == [2001, 2002, 2003, 2004]
    with pytest.raises(InvalidRequest):  # v4 may not drop the field v3 added
        make(disabled, version=4, previous=v3)


# -- references at index 1001 ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [("sku@1", ("sku", 1)), (" sku-basic@12 ", ("sku-basic", 12)), ("a.b_c@0", ("a.b_c", 0))],
)
def test_template_references(text: str, expected: tuple[str, int]) -> None:
    assert parse_template_ref(ref(text), "values") == expected


@pytest.mark.parametrize(
    "text",
    [
        b"sku",
        b"sku@",
        b"@1",
        b"sku@x",
        b"sku@-1",
        b"sku@1.5",
        b"a b@1",
        b"sku@1@2",
        b"\xff\xfe",
        b"",
        "sku@²".encode(),
        "sku@١".encode(),
        b"sku@" + b"9" * 40,
    ],
)
def test_bad_template_references(text: bytes) -> None:
    """Every bad reference is an InvalidValue (responseCode 202), never another exception."""
    with pytest.raises(InvalidValue) as exc:
        parse_template_ref(ref(text), "item 3")
    assert exc.value.message.startswith("item 3:")


# -- validating values --------------------------------------------------------------------------------
def test_complete_values_pass() -> None:
    validate_against(make(), ok_values(), "values")
    validate_against(make(), ok_values(batch=None, colour=None), "values")  # only model is required
    validate_against(make(), ok_values(colour="蓝"), "values")
    validate_against(make(), [*ok_values(), v(100, "HS_ADMIN", b"\x00"), v(1999, "X", "below the field range")], "v")


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"model": None}, "required field 'model' (index 2001) is missing"),
        ({"model": "M"}, "shorter than 2"),
        ({"model": "M123456"}, "longer than 6"),
        ({"batch": "B123"}, "does not match"),
        ({"batch": "B12345"}, "does not match"),  # the whole value must match
        ({"batch": "xB1234"}, "does not match"),
        ({"colour": "blue"}, "must be one of red, green, 蓝"),
        ({"colour": "Red"}, "must be one of"),
    ],
)
def test_field_checks(over: dict[str, str | None], words: str) -> None:
    with pytest.raises(InvalidValue) as exc:
        validate_against(make(), ok_values(**over), "item 7")
    assert words in exc.value.message
    assert exc.value.message.startswith("item 7:")


def test_lengths_count_characters_not_bytes() -> None:
    validate_against(make(), ok_values(model="型号"), "v")  # 2 characters, 6 bytes
    validate_against(make(), ok_values(model="型号型号型号"), "v")  # 6 characters, 18 bytes


def test_a_field_must_have_its_type_and_be_text() -> None:
    values = [v(1001, TEMPLATE_TYPE, "sku@1"), v(2001, "URL", "M100")]
    with pytest.raises(InvalidValue, match="must have type MODEL"):
        validate_against(make(), values, "v")
    with pytest.raises(InvalidValue, match="UTF-8"):
        validate_against(make(), [v(2001, "MODEL", b"\xff\xfe")], "v")


def test_field_types_compare_like_other_handle_types() -> None:
    """Handle value types compare case-insensitively elsewhere (HS_ADMIN, TEMPLATE, type filters)."""
    validate_against(make(), [v(2001, "model", "M100")], "v")


def test_unknown_field_indexes_are_refused() -> None:
    with pytest.raises(InvalidValue) as exc:
        validate_against(make(), [*ok_values(), v(2500, "EXTRA", "?")], "v")
    assert "index 2500 is not a field of template sku@1" in exc.value.message
    with pytest.raises(InvalidValue):
        validate_against(make(), [*ok_values(), v(FIELD_MIN_INDEX, "EXTRA", "?")], "v")


def test_disabled_fields() -> None:
    body = {
        "fields": [
            {"index": 2001, "name": "model", "type": "MODEL", "required": True, "disabled": True},
            {"index": 2002, "name": "batch", "type": "BATCH", "disabled": True},
        ]
    }
    t = make(body)
    validate_against(t, [v(1, "URL", "u")], "v")  # a disabled required field is not required
    with pytest.raises(InvalidValue, match="field 'batch' is disabled in sku@1"):
        validate_against(t, [v(2002, "BATCH", "B0001")], "v")
    with pytest.raises(InvalidValue, match="disabled"):
        validate_against(t, [v(2001, "MODEL", "M100")], "v")


# -- stored form ---------------------------------------------------------------------------------------
_field_json = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=10).filter(lambda s: s.strip() == s and s),
        "type": st.sampled_from(["A", "B"]),
    },
    optional={
        "required": st.booleans(),
        "disabled": st.booleans(),
        "min_length": st.integers(0, 5),
        "max_length": st.integers(5, 50),
        "pattern": st.sampled_from(["[a-z]+", ".*", "B[0-9]{4}"]),
        "enum": st.lists(st.text(max_size=5), min_size=1, max_size=4),
    },
)


@given(st.lists(_field_json, min_size=1, max_size=6, unique_by=lambda f: f["name"]), st.text(max_size=30))
def test_stored_form_round_trips(fields: list[dict[str, Any]], description: str) -> None:
    body = {"description": description, "fields": [{**f, "index": 2000 + n} for n, f in enumerate(fields)]}
    t = template_from_json(body, id="sku", version=3, scope="88.118.8.1001", previous=None)
    assert Template.from_stored("sku", 3, "88.118.8.1001", t.fields_json()) == t


@pytest.mark.parametrize("pattern", ["(a+)+", "([a-z]+)*x", "(a|aa)+", "((a*)b)*", "(ab|a)*c"])
def test_patterns_that_can_take_exponential_time_are_refused(pattern):
    from registry.errors import InvalidRequest
    from registry.templates import template_from_json

    body = {"fields": [{"index": 2001, "name": "lot", "type": "LOT", "pattern": pattern}]}
    with pytest.raises(InvalidRequest, match="exponential"):
        template_from_json(body, id="t", version=1, scope="", previous=None)


@pytest.mark.parametrize(
    "pattern", ["[0-9]{8}", r"SKU-[0-9]{4}-[0-9]+", r"\d+(\.\d+)?", "red|blue", "(?:[A-Z]{2}-)+[0-9]+"]
)
def test_ordinary_patterns_are_accepted(pattern):
    from registry.templates import template_from_json

    body = {"fields": [{"index": 2001, "name": "lot", "type": "LOT", "pattern": pattern}]}
    assert template_from_json(body, id="t", version=1, scope="", previous=None).fields[0].pattern == pattern
