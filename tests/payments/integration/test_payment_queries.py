"""Payments asks the provider about orders whose callback never came: payments on the real broker and
PostgreSQL, its query worker talking to the local provider server (WeChat Pay and Alipay) over loopback."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from contracts.codec import decode
from contracts.events import OrderExpired, PaymentFailed, PaymentSucceeded
from contracts.topics import Topic
from credited.providers import wechatpay as local_wechatpay
from credited.providers.book import TradeState
from credited.providers.faults import Faults
from credited.providers.keys import LocalKeys
from credited.providers.notifier import Answer, NotifyKnobs, httpx_post
from credited.providers.server import LocalProvider
from credited.stack.processes import free_port
from payments.adapters.queries import PostgresQuerySchedule
from payments.bootstrap import build as build_payments
from payments.config import Settings as PaymentsSettings
from payments.queries import QueryWorker
from servicekit.infrastructure import Infrastructure
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all
from tests.service_settings import settings_for

CHANNELS = {"alipay": "alipay", "wechatpay": "wechat"}


@pytest.fixture(scope="module")
def keys() -> LocalKeys:
    return LocalKeys.generate()


@pytest.fixture
async def provider(keys: LocalKeys) -> AsyncIterator[LocalProvider]:
    """The local provider, dropping every notification it would send: no callback ever reaches payments."""
    server = LocalProvider(free_port(), keys=keys, faults=Faults(hang_s=1.0), knobs=NotifyKnobs(drop_share=1.0))
    await server.start()
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), 10)


class Payments:
    """One payments instance: its parts, and its outbox relay and query worker running."""

    def __init__(self, infra: Infrastructure, app: FastAPI) -> None:
        self.infra, self.app = infra, app
        worker: QueryWorker = app.state.query_worker
        self.tasks = [asyncio.create_task(infra.relay.run()), asyncio.create_task(worker.run())]
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payments")

    async def with_key(self) -> "Payments":
        """The client sends a key with every scope, as the platform backend would."""
        self.client.headers.update(await bearer(self.infra.keys))
        return self

    async def order(self, channel: str, amount: int = 600) -> str:
        body = {"user_id": "u-query", "amount": amount, "currency": "CNY", "channel": channel}
        answer = await self.client.post("/v1/orders", json=body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["order_id"])

    async def view(self, order_id: str) -> dict[str, Any]:
        answer = await self.client.get(f"/v1/orders/{order_id}")
        return dict(answer.json())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()
        with contextlib.suppress(Exception):
            await self.infra.close()


Start = Callable[..., Awaitable[Payments]]


@pytest.fixture
async def start(broker: Broker, database_url: str, isolation: str, provider: LocalProvider) -> AsyncIterator[Start]:
    """Starts payments instances as the local provider's merchant, with queries a fraction of a second apart."""
    started: list[Payments] = []
    env = {k.removeprefix("PAYMENTS_").lower(): v for k, v in provider.keys.payments_env(provider.url).items()}

    async def start(**changes: object) -> Payments:
        options: dict[str, Any] = {
            **env,
            "provider_timeout_s": 2,
            "query_delay_s": 0.3,
            "query_max_interval_s": 0.5,
            "query_idle_s": 0.05,
            "payment_expiry_s": 60,
            **changes,
        }
        infra, app = await build_payments(settings_for(PaymentsSettings, broker, database_url, isolation, **options))
        payments = await Payments(infra, app).with_key()
        started.append(payments)
        return payments

    yield start
    for payments in started:
        await payments.stop()


def trade_no(name: str, order_id: str) -> str:
    return local_wechatpay.trade_no_for(order_id) if name == "wechatpay" else order_id


def metric(payments: Payments, name: str, **labels: str) -> float:
    return payments.infra.registry.get_sample_value(name, labels) or 0.0


async def announced(broker: Broker, payments: Payments, kind: type, order_id: str) -> int:
    topic = Topic.PAYMENTS_EVENTS.qualified(payments.infra.settings.topic_prefix)
    decoded = [decode(r.value, r.headers)[0] for r in await read_all(broker.bootstrap, topic)]
    return sum(1 for m in decoded if isinstance(m, kind) and m.order_id == order_id)


async def paid(payments: Payments, order_id: str) -> bool:
    return (await payments.view(order_id))["payment_status"] == "succeeded"


async def unscheduled(payments: Payments, order_id: str) -> bool:
    query = "SELECT count(*) = 0 FROM payment_queries WHERE order_id = $1"
    return bool(await payments.infra.pool.fetchval(query, order_id))


@pytest.mark.parametrize("name", ["alipay", "wechatpay"])
async def test_a_paid_order_whose_callback_was_dropped_is_paid_once_by_query_and_its_late_callback_changes_nothing(
    name: str, broker: Broker, provider: LocalProvider, start: Start
) -> None:
    payments = await start()
    order_id = await payments.order(CHANNELS[name])
    delivery = provider.pay(name, trade_no(name, order_id), 600)
    assert delivery.dropped

    await eventually(lambda: paid(payments, order_id), timeout_s=30)
    await eventually(lambda: unscheduled(payments, order_id), timeout_s=10)
    view = await payments.view(order_id)
    trade = provider.book.get(name, trade_no(name, order_id))
    assert trade is not None and view["provider_txn_id"] == trade.txn_id and view["provider"] == name
    assert metric(payments, "payments_recovered_by_query_total", provider=name, channel=CHANNELS[name]) == 1

    note = delivery.notification
    late = await payments.client.post(f"/v1/psp/{name}/callbacks", content=note.body, headers=dict(note.headers))
    assert note.accepted(Answer(late.status_code, late.text)), late.text
    audit = await payments.infra.pool.fetch("SELECT outcome FROM callbacks WHERE order_id = $1 ORDER BY id", order_id)
    assert [r["outcome"] for r in audit] == ["paid", "duplicate"]
    await eventually(lambda: payments.infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
    assert await announced(broker, payments, PaymentSucceeded, order_id) == 1
    assert metric(payments, "payments_recovered_by_query_total", provider=name, channel=CHANNELS[name]) == 1


@pytest.mark.parametrize("name", ["alipay", "wechatpay"])
async def test_a_notification_sent_twice_over_http_is_applied_once_answered_in_its_providers_form_and_ends_its_queries(
    name: str, broker: Broker, provider: LocalProvider, start: Start
) -> None:
    payments = await start(query_delay_s=60)  # no query: the callbacks alone pay the order
    provider.notifier.knobs = NotifyKnobs(duplicate_share=1.0)
    provider.notifier.post = httpx_post(payments.client)
    provider.notifier.urls[name] = f"http://payments/v1/psp/{name}/callbacks"
    order_id = await payments.order(CHANNELS[name])

    delivery = provider.pay(name, trade_no(name, order_id), 600)
    await provider.notifier.drain()

    # The local provider took both answers as its protocol's "received": it would not send them again.
    expected = {"wechatpay": [204, 204], "alipay": [200, 200]}[name]
    assert delivery.accepted and delivery.statuses == expected
    assert await paid(payments, order_id)
    # Its query was due a minute later: the callback took it off the schedule in its own transaction.
    assert await unscheduled(payments, order_id)
    audit = await payments.infra.pool.fetch("SELECT outcome FROM callbacks WHERE order_id = $1 ORDER BY id", order_id)
    assert sorted(r["outcome"] for r in audit) == ["duplicate", "paid"]
    await eventually(lambda: payments.infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
    assert await announced(broker, payments, PaymentSucceeded, order_id) == 1
    assert metric(payments, "payments_recovered_by_query_total", provider=name, channel=CHANNELS[name]) == 0

    note = delivery.notification
    changed = (b"EV-", b"EW-") if name == "wechatpay" else (b"6.00", b"6.01")
    tampered = note.body.replace(*changed)
    assert tampered != note.body
    refused = await payments.client.post(f"/v1/psp/{name}/callbacks", content=tampered, headers=dict(note.headers))
    assert refused.status_code == 401 and not note.accepted(Answer(refused.status_code, refused.text))
    if name == "wechatpay":
        assert refused.json()["code"] == "FAIL"
    else:
        assert refused.headers["content-type"].startswith("text/plain") and refused.text == "fail"


@pytest.mark.parametrize("name", ["alipay", "wechatpay"])
async def test_an_order_never_paid_ends_expired_and_closed_at_the_provider(
    name: str, broker: Broker, provider: LocalProvider, start: Start
) -> None:
    payments = await start(payment_expiry_s=1.5)
    order_id = await payments.order(CHANNELS[name])
    provider.open(name, trade_no(name, order_id), 600)  # the user started paying, and never did

    async def expired() -> bool:
        return (await payments.view(order_id))["status"] == "expired"

    await eventually(expired, timeout_s=30)
    trade = provider.book.get(name, trade_no(name, order_id))
    assert trade is not None and trade.state is TradeState.CLOSED
    await eventually(lambda: unscheduled(payments, order_id), timeout_s=10)
    await eventually(lambda: payments.infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
    assert await announced(broker, payments, OrderExpired, order_id) == 1
    assert (await payments.view(order_id))["payment_status"] == "pending"
    assert metric(payments, "payments_orders_expired_total", provider=name, channel=CHANNELS[name]) == 1


async def test_an_order_unknown_to_alipay_at_its_expiry_keeps_its_query_and_is_found_paid_after(
    provider: LocalProvider, start: Start
) -> None:
    payments = await start(payment_expiry_s=1.0, query_unknown_order_for_s=600)
    order_id = await payments.order("alipay")  # the user never opens the cashier before the expiry

    async def expired() -> bool:
        return bool((await payments.view(order_id))["status"] == "expired")

    await eventually(expired, timeout_s=30)
    provider.pay("alipay", order_id, 600)  # paid after the expiry; the notification is dropped
    try:
        await eventually(lambda: paid(payments, order_id), timeout_s=15)
    except AssertionError as exc:
        rows = await payments.infra.pool.fetchval("SELECT count(*) FROM payment_queries WHERE order_id = $1", order_id)
        raise AssertionError(
            f"order {order_id} paid at alipay after it expired unknown there was never found: {rows} query rows"
        ) from exc


async def test_alipays_notice_of_the_trade_our_expiry_closed_leaves_the_order_expired_announcing_no_failure(
    broker: Broker, provider: LocalProvider, start: Start
) -> None:
    payments = await start(payment_expiry_s=1.5)
    order_id = await payments.order("alipay")
    trade = provider.open("alipay", trade_no("alipay", order_id), 600)

    async def expired() -> bool:
        return (await payments.view(order_id))["status"] == "expired"

    await eventually(expired, timeout_s=30)
    await eventually(lambda: unscheduled(payments, order_id), timeout_s=10)
    notice = provider.notification(trade)  # TRADE_CLOSED: Alipay notifies a closed trade by default
    assert b"TRADE_CLOSED" in notice.body
    answer = await payments.client.post("/v1/psp/alipay/callbacks", content=notice.body, headers=dict(notice.headers))
    assert answer.status_code == 200, answer.text
    view = await payments.view(order_id)
    assert (view["status"], view["payment_status"]) == ("expired", "pending")
    await eventually(lambda: payments.infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
    assert await announced(broker, payments, OrderExpired, order_id) == 1
    assert await announced(broker, payments, PaymentFailed, order_id) == 0


async def test_alipays_notice_of_the_trade_our_expiry_closes_arriving_before_the_expiry_is_saved_announces_no_failure(
    broker: Broker, provider: LocalProvider, start: Start
) -> None:
    """Alipay sends TRADE_CLOSED as soon as our close call closes the trade: it can reach payments before the
    worker has recorded the expiry. The order must end as it does when the notice comes after: expired, announced
    once, and no payment failure announced for a trade nobody failed to pay."""
    payments = await start(payment_expiry_s=1.5)
    order_id = await payments.order("alipay")
    trade = provider.open("alipay", trade_no("alipay", order_id), 600)
    alipay = payments.app.state.providers.get("alipay")
    close = alipay.close
    answers: list[int] = []

    async def close_then_notified(closing: str) -> Any:
        answer = await close(closing)
        if closing == order_id:  # Alipay's notice of the closed trade, in before the expiry is recorded
            notice = provider.notification(trade)
            assert b"TRADE_CLOSED" in notice.body
            posted = await payments.client.post(
                "/v1/psp/alipay/callbacks", content=notice.body, headers=dict(notice.headers)
            )
            answers.append(posted.status_code)
        return answer

    alipay.close = close_then_notified

    async def expired() -> bool:
        return (await payments.view(order_id))["status"] == "expired"

    await eventually(expired, timeout_s=30)
    await eventually(lambda: unscheduled(payments, order_id), timeout_s=10)
    assert answers == [200]
    await eventually(lambda: payments.infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
    assert await announced(broker, payments, OrderExpired, order_id) == 1
    assert await announced(broker, payments, PaymentFailed, order_id) == 0, (
        f"order {order_id}: Alipay's notice of the trade our expiry closed was announced as a payment failure "
        f"before the OrderExpired (payment_status {(await payments.view(order_id))['payment_status']!r})"
    )


async def test_an_unanswered_query_at_the_expiry_never_expires_the_order(provider: LocalProvider, start: Start) -> None:
    provider.faults.failure_share = 1.0  # every query and close answered 500
    payments = await start(payment_expiry_s=0.5)
    order_id = await payments.order("alipay")
    provider.open("alipay", order_id, 600)

    async def asked_after_expiry() -> bool:
        return provider.faults.counts["query:fail"] >= 4

    await eventually(asked_after_expiry, timeout_s=30)
    assert (await payments.view(order_id))["status"] == "submitted"
    assert not await unscheduled(payments, order_id)
    provider.faults.failure_share = 0.0  # the provider is back: now the order expires
    await eventually(lambda: unscheduled(payments, order_id), timeout_s=30)
    assert (await payments.view(order_id))["status"] == "expired"


async def test_a_restart_loses_no_scheduled_query_and_two_instances_never_ask_about_one_order_twice(
    provider: LocalProvider, start: Start
) -> None:
    first = await start(query_delay_s=4.0)
    orders = [await first.order("alipay") for _ in range(12)]
    await first.stop()  # before any query was due
    for order_id in orders:
        provider.pay("alipay", order_id, 600)  # every callback dropped

    instances = [await start(query_delay_s=4.0) for _ in range(2)]

    async def all_paid() -> bool:
        return all([await paid(instances[0], order_id) for order_id in orders])

    await eventually(all_paid, timeout_s=30)
    # Each order was asked about once in all: the first answer settled it, and no instance asked meanwhile.
    assert provider.faults.counts["query:none"] == len(orders)
    recovered = sum(
        metric(p, "payments_recovered_by_query_total", provider="alipay", channel="alipay") for p in instances
    )
    assert recovered == len(orders)


async def test_an_order_gets_its_query_with_it_once_and_only_when_a_provider_takes_its_channel(start: Start) -> None:
    payments = await start(query_delay_s=600, payment_expiry_by_channel={"wechat": 900})
    body = {"user_id": "u-query", "amount": 600, "currency": "CNY", "channel": "alipay"}
    first = await payments.client.post("/v1/orders", json=body, headers={"Idempotency-Key": "k-query-1"})
    again = await payments.client.post("/v1/orders", json=body, headers={"Idempotency-Key": "k-query-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    wechat, card = await payments.order("wechat"), await payments.order("card")
    rows = await payments.infra.pool.fetch(
        "SELECT q.order_id, q.provider, q.attempts, q.due_at - o.created_at AS delay,"
        " q.expires_at - o.created_at AS expiry FROM payment_queries q JOIN orders o USING (order_id)"
        " ORDER BY q.channel"
    )
    assert [(r["order_id"], r["provider"], r["attempts"]) for r in rows] == [
        (first.json()["order_id"], "alipay", 0),
        (wechat, "wechatpay", 0),
    ]
    # The first query is due after the delay, or at the expiry when that comes first (alipay's, 60 s here).
    assert [(r["delay"].total_seconds(), r["expiry"].total_seconds()) for r in rows] == [(60, 60), (600, 900)]
    assert card not in {r["order_id"] for r in rows}


async def test_the_schedule_tells_when_its_earliest_query_falls_due_and_nothing_once_it_is_empty(start: Start) -> None:
    payments = await start(query_delay_s=600)
    schedule = PostgresQuerySchedule(payments.infra.pool)
    await payments.infra.pool.execute("DELETE FROM payment_queries")
    assert await schedule.next_due() is None

    first, second = await payments.order("alipay"), await payments.order("wechat")
    due = {r["order_id"]: r["due_at"] for r in await payments.infra.pool.fetch("SELECT * FROM payment_queries")}
    assert set(due) == {first, second} and await schedule.next_due() == min(due.values())
    await schedule.finish([first, second])
    assert await schedule.next_due() is None
