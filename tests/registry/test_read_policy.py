"""registry.read_policy: which values of a record a caller is served (the one rule of REST, native and
web resolution): selection by index or type, public values for anyone, ADMIN_READ for private readers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.model import ADMIN_READ, ADMIN_WRITE, PUBLIC_READ, PUBLIC_WRITE, HandleValue
from registry.read_policy import ALL_PUBLIC, ValueFilter, public_values, served_values

URL = HandleValue(1, "URL", b"https://example.com/p")  # default permissions: admin read/write, public read
EMAIL = HandleValue(2, "EMAIL", b"ops@example.com", permissions=PUBLIC_READ)
NOTE = HandleValue(3, "NOTE", b"internal", permissions=ADMIN_READ | ADMIN_WRITE)  # "1100": admins only
SEALED = HandleValue(4, "SECRET", b"write-only", permissions=ADMIN_WRITE)  # "0100": nobody reads it
SITE = HandleValue(5, "HS_SITE", b"\0\1")
SITE_PREFIX = HandleValue(6, "HS_SITE.PREFIX", b"\0\2", permissions=ADMIN_READ)  # non-public subtype
SITES = HandleValue(7, "HS_SITES", b"not a subtype")
VALUES = (URL, EMAIL, NOTE, SEALED, SITE, SITE_PREFIX, SITES)


def indexes(values: tuple[HandleValue, ...]) -> list[int]:
    return [v.index for v in values]


def test_anyone_is_served_the_public_values_in_record_order() -> None:
    assert indexes(served_values(VALUES, private_reader=False)) == [1, 2, 5, 7]
    assert served_values(VALUES, private_reader=False) == public_values(VALUES)


def test_a_private_reader_gets_non_public_values_only_with_admin_read() -> None:
    """RFC 3651 3.1: 1100 is served to an administrator, 0100 to nobody."""
    assert indexes(served_values(VALUES, private_reader=True)) == [1, 2, 3, 5, 6, 7]
    assert SEALED not in served_values(VALUES, private_reader=True)


@pytest.mark.parametrize("private_reader", [False, True])
def test_public_only_serves_public_values_even_to_a_private_reader(private_reader: bool) -> None:
    wanted = ValueFilter(public_only=True)
    assert served_values(VALUES, private_reader=private_reader, request=wanted) == public_values(VALUES)


@pytest.mark.parametrize(
    ("wanted", "anonymous", "private"),
    [
        (ValueFilter(types=("URL",)), [1], [1]),
        (ValueFilter(types=("url",)), [1], [1]),  # case-insensitive
        (ValueFilter(indexes=frozenset({2})), [2], [2]),
        (ValueFilter(types=("URL",), indexes=frozenset({2})), [1, 2], [1, 2]),  # index OR type
        (ValueFilter(types=("HS_SITE.",)), [5], [5, 6]),  # a trailing dot takes subtypes, not HS_SITES
        (ValueFilter(types=("HS_SITE",)), [5], [5]),  # exact type only
        (ValueFilter(types=("NOTE",)), [], [3]),  # selected, but not public
        (ValueFilter(indexes=frozenset({4})), [], []),  # nobody reads 0100
        (ValueFilter(indexes=frozenset({99}), types=("NOPE",)), [], []),
        (ValueFilter(types=("NOTE", "EMAIL"), public_only=True), [2], [2]),
    ],
)
def test_filters_select_then_the_caller_class_decides(
    wanted: ValueFilter, anonymous: list[int], private: list[int]
) -> None:
    assert wanted.selects
    assert indexes(served_values(VALUES, private_reader=False, request=wanted)) == anonymous
    assert indexes(served_values(VALUES, private_reader=True, request=wanted)) == private


def test_no_selection_means_every_value() -> None:
    assert not ALL_PUBLIC.selects and not ValueFilter(public_only=True).selects
    assert ALL_PUBLIC.select(VALUES) == VALUES
    assert ValueFilter(types=(), indexes=frozenset()).select(list(VALUES)) == VALUES


def test_public_values_hands_back_the_same_tuple_when_all_are_public() -> None:
    public = (URL, EMAIL, SITE)
    assert public_values(public) is public  # no copy on the hot path
    assert public_values(list(public)) == public  # another sequence: a tuple of them
    assert public_values((NOTE, SEALED)) == ()
    assert public_values(()) == ()


_permissions = st.integers(0, 0xF)
_values = st.lists(
    st.builds(
        HandleValue,
        index=st.integers(1, 20),
        type=st.sampled_from(["URL", "EMAIL", "HS_SITE", "HS_SITE.PREFIX", "NOTE"]),
        data=st.just(b"x"),
        permissions=_permissions,
    ),
    max_size=8,
).map(tuple)
_filters = st.builds(
    ValueFilter,
    types=st.lists(st.sampled_from(["URL", "hs_site.", "NOTE", "NOPE"]), max_size=2).map(tuple),
    indexes=st.frozensets(st.integers(1, 20), max_size=3),
    public_only=st.booleans(),
)


@given(values=_values, wanted=_filters, private_reader=st.booleans())
def test_never_serves_what_the_caller_may_not_read(
    values: tuple[HandleValue, ...], wanted: ValueFilter, private_reader: bool
) -> None:
    served = served_values(values, private_reader=private_reader, request=wanted)
    assert set(served) <= set(wanted.select(values))
    for v in served:
        assert v.permissions & PUBLIC_READ or (private_reader and not wanted.public_only and v.permissions & ADMIN_READ)
    # Public values are served to everyone who selected them; write bits never decide a read.
    assert [v for v in wanted.select(values) if v.public_read] == [v for v in served if v.public_read]
    flipped = tuple(HandleValue(v.index, v.type, v.data, permissions=v.permissions ^ PUBLIC_WRITE) for v in values)
    assert indexes(served_values(flipped, private_reader=private_reader, request=wanted)) == indexes(served)
