"""The unified social credit code (统一社会信用代码) of GB 32100-2015.

Eighteen characters: registration authority (1), entity type (1), administrative division code (6 digits),
organisation code (9) and a check character computed with weights 3**i mod 31 over 31 characters.
The first two positions are only checked against the character set.
"""

from __future__ import annotations

__all__ = ["USCC_CHARSET", "InvalidUSCC", "is_valid_uscc", "normalize_uscc", "uscc_check_char"]

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # no I, O, Z, S, V
_VALUE = {c: i for i, c in enumerate(USCC_CHARSET)}
_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
USCC_LENGTH = 18


class InvalidUSCC(ValueError):
    """A string that is not a valid unified social credit code."""


def _check_chars(text: str) -> None:
    for pos, ch in enumerate(text, start=1):
        if ch not in _VALUE:
            raise InvalidUSCC(f"bad character {ch!r} at position {pos} of {text!r}")
        if 3 <= pos <= 8 and not ch.isdigit():
            raise InvalidUSCC(
                f"bad character {ch!r} at position {pos} of {text!r}: "
                "positions 3-8 (administrative division code) must be digits"
            )


def uscc_check_char(first17: str) -> str:
    """The check character (position 18) for the first 17 characters of a code."""
    if not isinstance(first17, str):
        raise InvalidUSCC(f"USCC must be a string, got {type(first17).__name__}")
    first17 = first17.upper()
    if len(first17) != USCC_LENGTH - 1:
        raise InvalidUSCC(f"need the first 17 characters of a USCC, got {len(first17)}: {first17!r}")
    _check_chars(first17)
    total = sum(w * _VALUE[c] for w, c in zip(_WEIGHTS, first17, strict=True))
    return USCC_CHARSET[(31 - total % 31) % 31]


def normalize_uscc(text: str) -> str:
    """Strip and upper-case ``text`` and return it if it is a valid code, else raise ``InvalidUSCC``."""
    if not isinstance(text, str):
        raise InvalidUSCC(f"USCC must be a string, got {type(text).__name__}")
    code = text.strip().upper()
    if len(code) != USCC_LENGTH:
        raise InvalidUSCC(f"USCC must be {USCC_LENGTH} characters, got {len(code)}: {code!r}")
    _check_chars(code)
    expected = uscc_check_char(code[:17])
    if code[17] != expected:
        raise InvalidUSCC(f"bad check character {code[17]!r} in {code!r}: expected {expected!r}")
    return code


def is_valid_uscc(text: object) -> bool:
    """Whether ``text`` normalizes to a valid code."""
    try:
        normalize_uscc(text)  # type: ignore[arg-type]
    except InvalidUSCC:
        return False
    return True
