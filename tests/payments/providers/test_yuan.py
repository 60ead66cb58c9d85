"""Alipay's yuan strings to fen and back: exact, never through float, and only plain amounts."""

from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from payments.adapters.providers import yuan

FEN = st.integers(min_value=0, max_value=10**14 - 1)


@given(FEN)
@example(0)
@example(1)
@example(10)
@example(100)
@example(29)  # int(float("0.29") * 100) is 28
@example(10**14 - 1)
def test_fen_to_yuan_and_back_is_exact(fen: int) -> None:
    assert yuan.to_fen(yuan.from_fen(fen)) == fen


@given(
    whole=st.integers(min_value=0, max_value=10**12 - 1),
    fraction=st.one_of(st.just(""), st.from_regex(r"\A[0-9]{1,2}\Z")),
)
def test_a_yuan_string_is_its_decimal_value_in_fen_and_comes_back_in_two_decimals(whole: int, fraction: str) -> None:
    text = f"{whole}.{fraction}" if fraction else str(whole)
    fen = yuan.to_fen(text)
    assert fen == Decimal(text) * 100  # the exact decimal value, computed another way
    assert Decimal(yuan.from_fen(fen)) == Decimal(text)
    assert yuan.from_fen(fen) == f"{Decimal(text):.2f}"


@pytest.mark.parametrize(
    "text",
    [
        "12.345",  # a third decimal
        "0.001",
        "-1.00",  # negative
        "+1.00",
        "1e2",  # exponent
        "1E-2",
        "1.",
        ".5",
        "",
        " 1.00",
        "1.00 ",
        "01.00",  # leading zero
        "1,00",
        "NaN",
        "inf",
        "1_000.00",
        "١٢.٣٤",  # Arabic-Indic digits, which int() would take
        "\uff11\uff12.\uff13\uff14",  # full-width digits
        "1000000000000.00",  # thirteen integer digits
    ],
)
def test_anything_but_a_plain_amount_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="yuan amount"):
        yuan.to_fen(text)


@given(st.text(max_size=20))
def test_any_text_is_either_refused_or_read_exactly(text: str) -> None:
    try:
        fen = yuan.to_fen(text)
    except ValueError:
        return
    assert fen == Decimal(text) * 100
    assert yuan.from_fen(fen) == f"{Decimal(text):.2f}"


def test_a_negative_amount_is_never_written() -> None:
    with pytest.raises(ValueError, match="negative"):
        yuan.from_fen(-1)
