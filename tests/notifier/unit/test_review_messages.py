"""An order held for risk review: the user is told, in their language, when the review is expected to end."""

from datetime import UTC, datetime, timedelta

import pytest

from contracts.events import OrderStatus, OrderStatusChanged
from notifier.domain import LOCALES, format_time, render

PAID_AT = datetime(2026, 11, 22, 8, 30, tzinfo=UTC)
RELEASE = PAID_AT + timedelta(minutes=15)


def under_review(eta: datetime | None) -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id="ord_1",
        user_id="u1",
        status=OrderStatus.UNDER_REVIEW,
        sequence=1,
        previous_status=OrderStatus.PAID,
        reason="held for risk review",
        amount=60000,
        currency="CNY",
        channel="alipay",
        paid_at=PAID_AT,
        estimated_credit_at=eta,
        changed_at=PAID_AT,
    )


@pytest.mark.parametrize("locale", LOCALES)
def test_an_order_under_review_names_the_expected_time_in_every_locale(locale: str) -> None:
    with_eta, without = render(under_review(RELEASE), locale), render(under_review(None), locale)
    assert format_time(RELEASE, locale) in with_eta.body and "600.00" in with_eta.body
    assert format_time(RELEASE, locale) not in without.body and "UTC" not in without.body
    assert all(with_eta.title != render(under_review(RELEASE), other).title for other in LOCALES if other != locale)
    assert with_eta.title == without.title
