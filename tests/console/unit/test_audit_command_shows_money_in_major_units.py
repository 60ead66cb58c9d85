"""`credited audit` prints the money the audit looked at for the on-call engineer."""

import io

from rich.console import Console

from credited.audit import print_result


def test_the_audit_command_does_not_print_minor_units_as_if_they_were_whole_yuan_and_yen() -> None:
    """payments answers the audit's totals in minor units per currency; `credited audit` prints them bare:
    "paid 64800 CNY + 500 JPY". The engineer reads 64,800 yuan where 648.00 was paid (100 times), while the yen
    figure is right, so the same line is off by a different factor per currency (1000 times for KWD). Every other
    place staff read money says it: the console shows "CN¥648.00", `credited order` adds "(64800 minor units)"."""
    result = {
        "since": "2026-12-06T00:00:00+00:00",
        "until": "2026-12-06T12:00:00+00:00",
        "counts": {"missing_credit": 0},
        "findings": [],
        "redriven": [],
        "in_grace": 0,
        "refunds_in_flight": 0,
        "paid": {"CNY": 64800, "JPY": 500, "KWD": 1500},
        "credited": {"CNY": 64800, "JPY": 500, "KWD": 1500},
        "refunded": {},
    }
    out = io.StringIO()
    print_result(result, Console(file=out, width=200))
    text = out.getvalue()
    shown_right = "648.00" in text and "1.500" in text
    labelled = "minor" in text
    assert shown_right or labelled, text
