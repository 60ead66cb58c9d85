"""`credited audit` prints the orders the audit did not judge because their refund is still at the provider."""

import io

from rich.console import Console

from credited.audit import print_result


def test_the_audit_command_says_how_many_orders_it_left_unjudged_with_a_refund_in_flight() -> None:
    """An order neither credited nor refunded whose refund the provider has not finished is no finding: payments
    counts it apart (`refunds_in_flight`) and never re-drives it. `credited audit` printed the findings and the
    orders in grace but not these, so its table read "0 found" for a window holding orders nobody has paid back
    yet; only `--json` said so, and the runbook (MoneyAuditMismatch) sends the engineer to the table."""
    result = {
        "since": "2026-12-06T00:00:00+00:00",
        "until": "2026-12-06T12:00:00+00:00",
        "counts": {"missing_credit": 0, "credited_and_refunded": 0},
        "findings": [],
        "redriven": [],
        "in_grace": 1,
        "refunds_in_flight": 3,
        "paid": {"CNY": 2400},
        "credited": {},
        "refunded": {},
    }
    out = io.StringIO()
    print_result(result, Console(file=out, width=200))

    assert "3 with a refund in flight" in out.getvalue(), out.getvalue()
