"""Unified social credit code (GB 32100-2015) validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.uscc import USCC_CHARSET, InvalidUSCC, is_valid_uscc, normalize_uscc, uscc_check_char

# Codes whose check character verifies (published codes of registered companies).
VALID = ["91350100M000100Y43", "91110108551385082Q", "91440300708461136T", "91110000100006485K"]


@pytest.mark.parametrize("code", VALID)
def test_valid_codes(code: str) -> None:
    assert is_valid_uscc(code)
    assert normalize_uscc(code) == code
    assert uscc_check_char(code[:17]) == code[17]


def test_normalize_strips_and_uppercases() -> None:
    assert normalize_uscc("  91110108551385082q\n") == "91110108551385082Q"
    assert uscc_check_char("9135010 0m000100y4".replace(" ", "")) == "3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("91350100M000100Y4", "must be 18 characters, got 17"),
        ("91350100M000100Y433", "must be 18 characters, got 19"),
        ("", "must be 18 characters, got 0"),
        ("91350100M000100I43", "bad character 'I' at position 16"),
        ("9135010OM000100Y43", "bad character 'O' at position 8"),
        ("91350100M00010-Y43", "bad character '-' at position 15"),
        ("913501A0M000100Y43", "position 7 .*must be digits"),
        ("91350100M000100Y44", "bad check character '4' .*expected '3'"),
    ],
)
def test_invalid_codes(text: str, message: str) -> None:
    with pytest.raises(InvalidUSCC, match=message):
        normalize_uscc(text)
    assert not is_valid_uscc(text)


def test_invalid_types() -> None:
    assert not is_valid_uscc(None)
    assert not is_valid_uscc(91350100)
    with pytest.raises(ValueError):
        normalize_uscc(b"91350100M000100Y43")  # type: ignore[arg-type]
    with pytest.raises(InvalidUSCC, match="first 17"):
        uscc_check_char("91350100M000100Y43")
    with pytest.raises(InvalidUSCC, match="bad character 'Z'"):
        uscc_check_char("9135010 M000100Y4".replace(" ", "Z"))


body = st.tuples(
    st.text(USCC_CHARSET, min_size=2, max_size=2),
    st.text("0123456789", min_size=6, max_size=6),
    st.text(USCC_CHARSET, min_size=9, max_size=9),
).map("".join)


@given(body)
def test_generated_codes_validate_and_single_substitutions_fail(first17: str) -> None:
    code = first17 + uscc_check_char(first17)
    assert normalize_uscc(code.lower()) == code
    # The weights are all units mod 31, so changing any one character is always detected.
    for pos in range(18):
        for ch in USCC_CHARSET:
            if ch != code[pos] and not (3 <= pos + 1 <= 8 and not ch.isdigit()):
                assert not is_valid_uscc(code[:pos] + ch + code[pos + 1 :])
