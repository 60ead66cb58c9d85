"""Alipay's amounts: yuan as decimal strings ("12.34"), to and from integer fen, never through float."""

import re

# At most two decimals, no sign, no exponent, no spaces, ASCII digits only, no leading zeros; twelve
# integer digits is far above any single payment Alipay takes (100,000,000 yuan).
_YUAN = re.compile(r"(0|[1-9][0-9]{0,11})(?:\.([0-9]{1,2}))?", re.ASCII)


def to_fen(text: str) -> int:
    """The exact number of fen in a yuan amount string; ValueError for anything but a plain amount."""
    match = _YUAN.fullmatch(text)
    if match is None:
        raise ValueError(f"not a yuan amount with at most two decimals: {text[:40]!r}")
    whole, fraction = match.group(1), match.group(2) or ""
    return int(whole) * 100 + int(fraction.ljust(2, "0"))


def from_fen(fen: int) -> str:
    """The yuan string Alipay expects for `fen` (always two decimals: 1234 -> "12.34")."""
    if fen < 0:
        raise ValueError(f"a negative amount cannot be sent to Alipay: {fen}")
    return f"{fen // 100}.{fen % 100:02d}"
