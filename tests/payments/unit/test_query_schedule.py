"""The payment query schedule: first query after the delay, then backoff up to a cap, never past the expiry."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.domain import Order, PaymentStatus
from payments.schedule import QueryPolicy

PLACED = datetime(2026, 11, 22, 8, 30, tzinfo=UTC)
POLICY = QueryPolicy(
    providers={"alipay": "alipay", "wechat": "wechatpay"},
    delay_s=30,
    expiry_s=1800,
    expiry_by_channel={"wechat": 600},
    backoff=2,
    max_interval_s=300,
)


def order(channel: str = "alipay") -> Order:
    return Order("ord_1", "u1", 600, "CNY", channel, PaymentStatus.PENDING, "submitted", PLACED)


def test_the_first_query_is_due_the_delay_after_the_order_and_expires_with_its_channel() -> None:
    first = POLICY.first(order())
    assert first is not None
    assert (first.provider, first.channel) == ("alipay", "alipay")
    assert first.due_at == PLACED + timedelta(seconds=POLICY.delay_s)
    assert first.expires_at == PLACED + timedelta(seconds=POLICY.expiry_s)
    wechat = POLICY.first(order("wechat"))
    assert wechat is not None and wechat.provider == "wechatpay"
    assert wechat.expires_at == PLACED + timedelta(seconds=POLICY.expiry_by_channel["wechat"])


def test_an_order_of_a_channel_without_a_provider_to_ask_gets_no_query() -> None:
    assert POLICY.first(order("card")) is None


def test_a_delay_longer_than_the_expiry_queries_at_the_expiry() -> None:
    short = QueryPolicy({"alipay": "alipay"}, delay_s=60, expiry_s=20, max_interval_s=60)
    first = short.first(order())
    assert first is not None and first.due_at == first.expires_at


def test_each_wait_is_backoff_times_the_one_before_until_the_cap() -> None:
    waits = [POLICY.interval(n).total_seconds() for n in range(1, 8)]
    assert waits[0] == POLICY.delay_s * POLICY.backoff
    for before, after in itertools.pairwise(waits):
        assert after == min(before * POLICY.backoff, POLICY.max_interval_s)
    assert waits[-1] == POLICY.max_interval_s


def test_queries_run_until_the_expiry_and_the_last_one_is_at_the_expiry() -> None:
    first = POLICY.first(order())
    assert first is not None
    at, attempts, times = first.due_at, 1, [first.due_at]
    while at < first.expires_at:
        at = POLICY.next_due(attempts, at, first.expires_at)
        attempts += 1
        times.append(at)
    assert times[-1] == first.expires_at
    assert times == sorted(set(times))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert max(gaps) <= POLICY.max_interval_s


def test_after_the_expiry_an_unanswered_query_is_asked_again_with_backoff() -> None:
    expires = PLACED + timedelta(seconds=POLICY.expiry_s)
    later = expires + timedelta(seconds=5)
    assert POLICY.next_due(3, later, expires) == later + POLICY.interval(3)


def test_a_policy_that_would_never_wait_is_refused() -> None:
    with pytest.raises(ValueError, match="positive delay"):
        QueryPolicy({}, delay_s=0)
    with pytest.raises(ValueError, match="backoff"):
        QueryPolicy({}, backoff=0.5)


@given(
    attempts=st.integers(min_value=0, max_value=10_000),
    offset_s=st.floats(min_value=-5000, max_value=5000, allow_nan=False),
)
def test_the_next_query_is_always_later_and_never_jumps_past_a_future_expiry(attempts: int, offset_s: float) -> None:
    expires = PLACED + timedelta(seconds=POLICY.expiry_s)
    now = expires + timedelta(seconds=offset_s)
    due = POLICY.next_due(attempts, now, expires)
    assert now < due <= now + timedelta(seconds=POLICY.max_interval_s)
    if now < expires:
        assert due <= expires
