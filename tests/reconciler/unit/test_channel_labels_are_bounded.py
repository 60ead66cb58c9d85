"""An order's channel is the API caller's to choose: payments takes any channel matching [a-z0-9_.-]{1,32} on
POST /v1/orders. The reconciler labels reconciler_orders_paid_total, _credited_total, _overdue_flagged_total and
reconciler_pay_to_credit_seconds by the channels payments labels its own series by (PAYMENTS_METRIC_CHANNELS, one
setting both read) and counts any other as `other`, so a caller cannot create series at will and the per-channel
alert and dashboards see the same channels in both services' series."""

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from contracts.events import PaymentSucceeded
from payments.config import Settings as PaymentsSettings
from reconciler.adapters.metrics import PrometheusObservations
from reconciler.config import Settings
from tests.reconciler.unit.worker import Worker, credited


def payment(order_id: str, channel: str, seconds_ago: float = 0.0) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id, user_id="u1", amount=600, currency="CNY", channel=channel, provider="sim",
        provider_txn_id=f"tx-{order_id}", paid_at=datetime.now(UTC) - timedelta(seconds=seconds_ago),
    )  # fmt: skip


def labels(observe: PrometheusObservations) -> set[str]:
    return {
        sample.labels["channel"]
        for counter in (observe.paid_orders, observe.credited_orders, observe.flagged_orders, observe.pay_to_credit)
        for metric in counter.collect()
        for sample in metric.samples
        if "channel" in sample.labels
    }


async def test_the_channel_an_api_caller_writes_on_an_order_cannot_create_reconciler_series_at_will() -> None:
    worker = Worker()
    records = []
    for i in range(50):
        records.append(worker.record(payment(f"c{i}", f"promo-{i}", seconds_ago=30)))
        records.append(worker.record(credited(f"c{i}")))
    records.append(worker.record(payment("late", "promo-late", seconds_ago=30)))
    records.append(worker.record(payment("w1", "wechat")))
    await worker.batch(*records)
    await worker.tick()  # "late" is flagged overdue (paid 30 s ago, appended now: past its 5 s deadline on arrival)
    assert worker.observe.flagged_orders.labels("other", "payment_late")._value.get() == 1
    assert labels(worker.observe) == {"other", "wechat"}


def test_the_reconciler_labels_by_the_channels_payments_is_configured_with(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().metric_channels == PaymentsSettings().metric_channels, "the same channels by default"
    monkeypatch.setenv("PAYMENTS_METRIC_CHANNELS", '["wechat", "promo"]')
    channels = Settings().metric_channels
    assert channels == PaymentsSettings().metric_channels == {"wechat", "promo"}
    observe = PrometheusObservations(CollectorRegistry(), channels=channels)
    for channel in ("promo", "wechat", "alipay", "promo-2"):
        observe.paid(channel)
    assert labels(observe) == {"promo", "wechat", "other"}
