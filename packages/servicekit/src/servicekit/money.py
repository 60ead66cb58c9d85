"""The contract's money as people read it: an amount in minor units shown in the currency's major unit with as many
decimals as ISO 4217 gives it, in a locale's way (Babel's patterns), for the notifier's messages and the support
console alike."""

import copy
from decimal import Decimal

from babel import Locale

from contracts.base import exponent


def format_minor(amount: int, currency: str, locale: Locale) -> str:
    """`64800, "CNY"` as "CN¥648.00" in English and "¥648.00" in zh-CN, `64800, "JPY"` as "¥64,800", `1500, "IQD"`
    as "IQD1.500": the ISO 4217 exponent decides the decimals, never CLDR's display digits (which would show
    IQD 1.500 as 2, and RSD 100.00 as 10,000 read from the minor units)."""
    digits = exponent(currency)
    pattern = copy.copy(locale.currency_formats["standard"])
    pattern.frac_prec = (digits, digits)
    shown: str = pattern.apply(Decimal(amount).scaleb(-digits), locale, currency=currency, currency_digits=False)
    return shown


def in_major_units(amount: int, currency: str) -> str:
    """`600, "CNY"` as "6.00 CNY", `600, "JPY"` as "600 JPY": for the texts staff read (a case's reason, a timeline's
    summary), where "600 CNY" for 600 fen read as a hundred times the money."""
    digits = exponent(currency)
    return f"{Decimal(amount).scaleb(-digits):.{digits}f} {currency}"
