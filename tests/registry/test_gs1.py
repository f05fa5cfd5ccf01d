"""GS1 Digital Link paths of trade items and the handles they map to (``registry/gs1.py``): check
digits (published GTINs, and properties over every GTIN with hypothesis), the accepted forms, every
refusal with its message, and the mapping."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import InvalidHandle, InvalidRequest
from registry.gs1 import (
    CSET_82,
    DigitalLink,
    check_digit,
    company_prefix_candidates,
    normalise_gtin,
    parse_company_prefix,
    parse_digital_link,
)

# Published GTINs: GS1's own example, EAN-13 and EAN-8 and UPC-A examples of the standards' primers.
VALID = ["09506000134352", "9506000134352", "4006381333931", "73513537", "036000291452", "6901234567892"]
G = "06901234567892"


def weighted_sum_is_round(gtin14: str) -> bool:
    """The check as the GS1 General Specifications state it, written independently of check_digit:
    positions 1, 3, …, 13 of a GTIN-14 weigh 3, the others 1, and the total is a multiple of ten."""
    return sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(gtin14)) % 10 == 0


@pytest.mark.parametrize("gtin", VALID)
def test_published_gtins_are_valid_and_padded_to_14_digits(gtin: str) -> None:
    assert normalise_gtin(gtin) == gtin.zfill(14)
    assert weighted_sum_is_round(gtin.zfill(14))


digits = st.text(alphabet="0123456789", min_size=13, max_size=13)


@given(digits)
def test_the_computed_check_digit_makes_a_valid_gtin(body: str) -> None:
    gtin = body + str(check_digit(body))
    assert weighted_sum_is_round(gtin)
    assert normalise_gtin(gtin) == gtin
    # A shorter form of the same number (its leading zeros dropped) is the same GTIN.
    for length in (13, 12, 8):
        if gtin.startswith("0" * (14 - length)):
            assert normalise_gtin(gtin[14 - length :]) == gtin


@given(digits, st.integers(min_value=0, max_value=13), st.integers(min_value=1, max_value=9))
def test_any_single_wrong_digit_is_refused(body: str, position: int, change: int) -> None:
    gtin = body + str(check_digit(body))
    wrong = gtin[:position] + str((int(gtin[position]) + change) % 10) + gtin[position + 1 :]
    with pytest.raises(InvalidHandle, match="wrong check digit"):
        normalise_gtin(wrong)


def test_wrong_check_digit_message_names_the_right_one() -> None:
    with pytest.raises(InvalidHandle) as err:
        parse_digital_link("/01/6901234567890")
    assert err.value.message == "GTIN 6901234567890 has a wrong check digit: 0, expected 2"
    assert err.value.code == 102


def test_forms() -> None:
    assert parse_digital_link(f"/01/{G}") == DigitalLink(G)
    assert parse_digital_link("/01/6901234567892") == DigitalLink(G)  # GTIN-13
    assert parse_digital_link("/01/73513537") == DigitalLink("00000073513537")  # GTIN-8
    assert parse_digital_link("/01/036000291452/10/L1") == DigitalLink("00036000291452", lot="L1")  # GTIN-12
    assert parse_digital_link(f"/01/{G}/10/L1") == DigitalLink(G, lot="L1")
    assert parse_digital_link(f"/01/{G}/21/S1") == DigitalLink(G, serial="S1")
    assert parse_digital_link(f"/01/{G}/10/L1/21/S1") == DigitalLink(G, lot="L1", serial="S1")
    assert parse_digital_link(f"/01/{G}/22/V2/10/L1/21/S1") == DigitalLink(G, cpv="V2", lot="L1", serial="S1")
    assert parse_digital_link(f"/01/{G}/22/V2") == DigitalLink(G, cpv="V2")
    assert parse_digital_link(f"/01/{G}/235/TPX-1") == DigitalLink(G, tpx="TPX-1")
    # One trailing slash is tolerated (resolver standard 2.13).
    assert parse_digital_link(f"/01/{G}/") == DigitalLink(G)
    assert parse_digital_link(f"/01/{G}/10/L1/") == DigitalLink(G, lot="L1")


def test_percent_decoding() -> None:
    link = parse_digital_link(f"/01/{G}/10/AB%2FC%25/21/%21%22%26%27()*+,-.%3A%3B%3C%3D%3E%3F_z")
    assert link.lot == "AB/C%" and link.serial == "!\"&'()*+,-.:;<=>?_z"
    assert parse_digital_link("/01/%36901234567892") == DigitalLink(G)  # the GTIN too
    assert parse_digital_link(f"/01/{G}/10/%41%62").lot == "Ab"  # any escape, upper or lower case hex
    assert parse_digital_link(f"/01/{G}/10/a%2fb").lot == "a/b"


def test_every_cset_82_character_is_accepted_and_nothing_else() -> None:
    assert len(CSET_82) == 82
    for c in CSET_82:
        assert parse_digital_link(f"/01/{G}/21/%{ord(c):02X}").serial == c
    for c in " #@[]^`{|}~é中\x00\x7f":
        encoded = "".join(f"%{b:02X}" for b in c.encode())
        with pytest.raises(InvalidHandle, match="GS1 character set 82"):
            parse_digital_link(f"/01/{G}/21/{encoded}")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/01/", "a GS1 Digital Link of a trade item starts with /01/ and the GTIN"),
        ("/414/6901234567892", "a GS1 Digital Link of a trade item starts with /01/ and the GTIN"),
        (f"/01/{G}/10", "a GS1 Digital Link path alternates AIs and values; '10' has no value"),
        ("/01/69012345678a2", "a GTIN is written in digits 0-9, got '69012345678a2'"),
        ("/01/６９０１２３４５６７８９２", "a GTIN is written in digits 0-9"),
        ("/01/690123456789", "GTIN 690123456789 has a wrong check digit"),
        ("/01/1234567", "a GTIN has 8, 12, 13 or 14 digits, got 7: 1234567"),
        ("/01/123456789012345", "a GTIN has 8, 12, 13 or 14 digits, got 15"),
        (f"/01/{G}/17/261231", "'17' is not a key qualifier of a GTIN: the path takes 22, 10, 21 or 235"),
        (f"/01/{G}/gtin/x", "'gtin' is not a key qualifier of a GTIN"),
        (f"/01/{G}/21/S1/10/L1", "key qualifiers go in the order 22, 10, 21"),
        (f"/01/{G}/10/L1/22/V2", "key qualifiers go in the order 22, 10, 21"),
        (f"/01/{G}/10/L1/10/L2", "the batch/lot number (10) appears twice"),
        (f"/01/{G}/235/T/21/S", "a third-party controlled serialised extension (235) stands alone after the GTIN"),
        (f"/01/{G}/10/L/235/T", "a third-party controlled serialised extension (235) stands alone after the GTIN"),
        (f"/01/{G}/10/", "a GS1 Digital Link path alternates AIs and values; '10' has no value"),
        (f"/01/{G}/10//21/S", "the batch/lot number (10) is empty"),
        (f"/01/{G}/10/{'L' * 21}", "the batch/lot number (10) has at most 20 characters, got 21"),
        (f"/01/{G}/235/{'T' * 29}", "has at most 28 characters, got 29"),
        (f"/01/{G}/10/{'%41' * 29}", "the batch/lot number (10) is too long"),
        (f"/01/{G}/10/A%2", "malformed percent-encoding in the batch/lot number (10)"),
        (f"/01/{G}/10/A%zz", "malformed percent-encoding in the batch/lot number (10)"),
        (f"/01/{G}/10/%C3%28", "the batch/lot number (10) is not valid UTF-8"),
        (f"/01/{G}/10/a b", "not ' '"),
        (f"/01/{G}/22/a/10/b/21/c/x/y", "too many path segments"),
        (f"/01/{G}//", "a GS1 Digital Link path alternates AIs and values"),
    ],
)
def test_refusals(path: str, message: str) -> None:
    with pytest.raises(InvalidHandle) as err:
        parse_digital_link(path)
    assert message in err.value.message


def test_handles_most_specific_first() -> None:
    """A serial (or TPX) names one unit with the GTIN alone, so its handle leaves the lot and the
    variant out (resolver standard 2.5.9, rule 2); a lookup walks up to the batch and the product."""
    base = f"01/{G}"
    assert DigitalLink(G).handle_suffixes() == (base,)
    assert DigitalLink(G, lot="L1").handle_suffixes() == (f"{base}/10/L1", base)
    assert DigitalLink(G, serial="S1").handle_suffixes() == (f"{base}/21/S1", base)
    assert DigitalLink(G, lot="L1", serial="S1").handle_suffixes() == (f"{base}/21/S1", f"{base}/10/L1", base)
    assert DigitalLink(G, cpv="V", lot="L", serial="S").handle_suffixes() == (
        f"{base}/21/S",
        f"{base}/22/V/10/L",
        f"{base}/10/L",
        f"{base}/22/V",
        base,
    )
    assert DigitalLink(G, tpx="T").handle_suffixes() == (f"{base}/235/T", base)


def test_values_in_handles_and_paths_are_percent_encoded() -> None:
    """A "/" inside a value is written %2F, so two different links never name the same handle."""
    tricky = parse_digital_link(f"/01/{G}/22/V%2F10%2FL")
    plain = parse_digital_link(f"/01/{G}/22/V/10/L")
    assert tricky.cpv == "V/10/L" and (plain.cpv, plain.lot) == ("V", "L")
    assert tricky.handle_suffixes()[0] == f"01/{G}/22/V%2F10%2FL"
    assert plain.handle_suffixes()[0] == f"01/{G}/22/V/10/L"
    assert DigitalLink(G, lot="a b?c", serial="x.y_z-1").path == f"/01/{G}/10/a%20b%3Fc/21/x.y_z-1"
    # The canonical path of a link parses back to the same link.
    link = DigitalLink(G, cpv="%&'", lot="(1)", serial="+,:;")
    assert parse_digital_link(link.path) == link


def test_company_prefix_candidates_skip_the_indicator_digit() -> None:
    assert company_prefix_candidates("16901234567899") == (
        "690123456789",
        "69012345678",
        "6901234567",
        "690123456",
        "69012345",
        "6901234",
        "690123",
        "69012",
        "6901",
    )
    # UPC-A: its company prefix with the leading 0 of the GTIN-13 form; GTIN-8: 00000 and 7 digits.
    assert "0036000" in company_prefix_candidates(normalise_gtin("036000291452"))
    assert company_prefix_candidates(normalise_gtin("73513537"))[0] == "000007351353"


def test_company_prefixes() -> None:
    assert parse_company_prefix("6901234") == "6901234"
    assert parse_company_prefix(" 0036000 ") == "0036000"
    for bad in ("690", "6901234567890", "69O1234", "６９０１２３４", "", "-6901234", 6901234, None):
        with pytest.raises(InvalidRequest, match="a GS1 company prefix is"):
            parse_company_prefix(bad)
    for restricted in ("0212345", "0412345", "2001234", "29999"):
        with pytest.raises(InvalidRequest, match="restricted circulation"):
            parse_company_prefix(restricted)


_gtins = digits.map(lambda body: body + str(check_digit(body)))
_values = st.text(alphabet=sorted(CSET_82), min_size=1, max_size=20)
_links = st.one_of(
    st.builds(
        DigitalLink,
        _gtins,
        cpv=st.none() | _values,
        lot=st.none() | _values,
        serial=st.none() | _values,
    ),
    st.builds(DigitalLink, _gtins, tpx=st.text(alphabet=sorted(CSET_82), min_size=1, max_size=28)),
)


@given(_links)
def test_every_link_round_trips_through_its_canonical_path(link: DigitalLink) -> None:
    assert parse_digital_link(link.path) == link
    assert parse_digital_link(link.path + "/") == link


@given(_links, _links)
def test_different_links_name_different_handles(a: DigitalLink, b: DigitalLink) -> None:
    """The mapping is one-to-one on what identifies an item: the most specific handle of two links
    is the same exactly when they name the same unit, batch, variant or product."""

    def identity(link: DigitalLink) -> tuple[str | None, ...]:
        if link.serial is not None or link.tpx is not None:  # a unit: the GTIN and its serial alone
            return (link.gtin, None, None, link.serial, link.tpx)
        return (link.gtin, link.cpv, link.lot, None, None)

    same_handle = a.handle_suffixes()[0] == b.handle_suffixes()[0]
    assert same_handle == (identity(a) == identity(b))


@given(st.text(max_size=60))
def test_any_path_is_a_link_or_a_clear_refusal(tail: str) -> None:
    """Whatever follows /01/ (any text, as sent or percent-encoded), the answer is a link or an
    InvalidHandle with a message: never another exception, which would be a 500."""
    for path in (f"/01/{tail}", f"/01/{G}/{tail}", f"/01/{G}/10/{quote(tail, safe='/%')}"):
        try:
            link = parse_digital_link(path)
        except InvalidHandle as exc:
            assert exc.message
        else:
            assert parse_digital_link(link.path) == link
