"""Amounts are integer minor units by the currency's ISO 4217 exponent (contracts.base.MinorUnits). What the user
and the support staff read must divide by that exponent, not by another table's."""

from credited.console.i18n import Words
from notifier.domain.locales import format_money


def test_the_notifier_shows_a_serbian_dinar_and_an_iraqi_dinar_amount_by_their_iso_4217_exponent() -> None:
    """An order of 10000 minor units of RSD (ISO 4217 exponent 2: 100.00 dinars) and one of 1500 minor units of
    IQD (exponent 3: 1.500 dinars) are told to the user as "RSD 10,000" and "IQD 1,500": 100 and 1000 times what
    they paid, in the notification, the inbox and the status page. The notifier divides by CLDR's display digits
    (Babel's get_currency_precision), which for IQD, RSD, LAK, IRR, ALL, MMK, LBP, SYP, YER... are not ISO's."""
    rsd = format_money(10000, "RSD", "en")
    iqd = format_money(1500, "IQD", "en")
    assert "100.00" in rsd and "1.500" in iqd, f"10000 RSD minor shown as {rsd!r}; 1500 IQD minor shown as {iqd!r}"


def test_the_support_console_shows_an_iraqi_dinar_amount_by_its_iso_4217_exponent() -> None:
    """The support console shows a paid IQD order of 1500 minor units (1.500 dinars) as "IQD 1,500": staff
    granting a compensation or judging a refund read 1000 times the amount the user paid."""
    shown = Words("en").money(1500, "IQD")
    assert "1.500" in shown, f"1500 IQD minor units shown in the console as {shown!r}"
