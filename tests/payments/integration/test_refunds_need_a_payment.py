"""An IssueRefund is executed only for an order payments knows as paid and not refunded, for the amount paid, on the
real broker and PostgreSQL: one for an unknown or unpaid order, or above the amount paid, is dead-lettered with its
reason, counted, and neither reaches the provider nor is recorded; a legitimate one still refunds, once."""

import asyncio
import contextlib
from datetime import UTC, datetime

from contracts.codec import decode, deterministic_id, encode, envelope_for
from contracts.commands import IssueRefund
from contracts.events import RefundSucceeded
from contracts.topics import Topic
from payments.bootstrap import build
from payments.config import Settings
from servicekit.kafka import KafkaPublisher
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all, read_until
from tests.service_settings import settings_for

AMOUNT = 600
ORDERS = """
INSERT INTO orders (order_id, user_id, amount, currency, channel, payment_status, status, provider, provider_txn_id,
                    created_at, paid_at)
VALUES ('ord_paid', 'u1', $1, 'CNY', 'card', 'succeeded', 'paid', 'sim', 'tx-paid', now(), now()),
       ('ord_pending', 'u1', $1, 'CNY', 'card', 'pending', 'created', NULL, NULL, now(), NULL)
"""


def refund(order_id: str, amount: int = AMOUNT) -> IssueRefund:
    return IssueRefund(
        order_id=order_id,
        user_id="u1",
        amount=amount,
        currency="CNY",
        reason="not credited",
        requested_at=datetime.now(UTC),
    )


async def test_a_refund_no_payment_stands_behind_is_dead_lettered_and_a_legitimate_one_refunds_once(
    broker: Broker, database_url: str, isolation: str
) -> None:
    settings = settings_for(
        Settings, broker, database_url, isolation, psp_secrets={"sim": ["sim-secret"]}, environment="development"
    )
    infra, _ = await build(settings)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    tasks: list[asyncio.Task[None]] = []
    commands = Topic.PAYMENTS_COMMANDS.qualified(settings.topic_prefix)

    async def send(message: IssueRefund, event_id: str) -> None:
        envelope = envelope_for(message, producer="reconciler", event_id=event_id)
        await publisher.publish_many([(commands, encode(message, envelope))])

    def rejected(label: str) -> float | None:
        labels = {"service": "payments", "group": "payments.commands", "reason": label}
        return infra.registry.get_sample_value("credited_rejected_messages_total", labels)

    try:
        await infra.pool.execute(ORDERS, AMOUNT)
        for consumer in infra.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run()) for c in infra.consumers] + [asyncio.create_task(infra.relay.run())]
        await send(refund("ord_ghost"), "ghost-refund")
        await send(refund("ord_pending"), "pending-refund")
        await send(refund("ord_paid", amount=AMOUNT + 1), "paid-refund-above")
        dead = await read_until(
            broker.bootstrap, Topic.DEAD_LETTER.qualified(settings.topic_prefix), lambda r: len(r) >= 3
        )
        reasons = {r.key: dict(r.headers)["dlq_reason"].decode() for r in dead}
        assert reasons == {
            b"ord_ghost": "rejected: no such order",
            b"ord_pending": "rejected: order is not paid (payment pending)",
            b"ord_paid": "rejected: refund of 6.01 CNY is above the 6.00 CNY paid",
        }
        labels = ("unknown_order", "order_not_paid", "above_amount_paid")
        await eventually(lambda: all(rejected(label) == 1 for label in labels), timeout_s=10)
        assert await infra.pool.fetchval("SELECT count(*) FROM refunds") == 0

        await send(refund("ord_paid"), "paid-refund")
        await send(refund("ord_paid"), "paid-refund-again")
        await eventually(lambda: infra.pool.fetchval("SELECT count(*) = 1 FROM refunds"), timeout_s=60)
        await eventually(lambda: infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
        stored = await infra.pool.fetchrow("SELECT order_id, status FROM refunds")
        assert (stored["order_id"], stored["status"]) == ("ord_paid", "succeeded")
        events = [
            decode(r.value, r.headers)
            for r in await read_all(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(settings.topic_prefix))
        ]
        refunded = [(m.order_id, m.amount, e.event_id) for m, e in events if isinstance(m, RefundSucceeded)]
        assert {(order_id, amount) for order_id, amount, _ in refunded} == {("ord_paid", AMOUNT)}
        assert len({event_id for _, _, event_id in refunded}) == 1  # the repeat announces the same event again
        assert len(await read_all(broker.bootstrap, Topic.DEAD_LETTER.qualified(settings.topic_prefix))) == 3
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        with contextlib.suppress(Exception):
            await infra.close()


CREDITED = """
INSERT INTO orders (order_id, user_id, amount, currency, channel, payment_status, status, provider, provider_txn_id,
                    created_at, paid_at)
VALUES ('ord_credited', 'u1', $1, 'CNY', 'card', 'succeeded', 'credited', 'sim', 'tx-credited', now(), now()),
       ('ord_compensated', 'u1', $1, 'CNY', 'card', 'succeeded', 'compensated', 'sim', 'tx-compensated', now(), now())
"""


async def test_a_refund_of_an_order_payments_knows_as_credited_is_dead_lettered_counted_and_never_reaches_the_provider(
    broker: Broker, database_url: str, isolation: str
) -> None:
    settings = settings_for(
        Settings, broker, database_url, isolation, psp_secrets={"sim": ["sim-secret"]}, environment="development"
    )
    infra, app = await build(settings)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    tasks: list[asyncio.Task[None]] = []
    commands = Topic.PAYMENTS_COMMANDS.qualified(settings.topic_prefix)
    try:
        await infra.pool.execute(CREDITED, AMOUNT)
        for consumer in infra.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run()) for c in infra.consumers] + [asyncio.create_task(infra.relay.run())]
        for order_id in ("ord_credited", "ord_compensated"):
            message = refund(order_id)
            envelope = envelope_for(message, producer="reconciler", event_id=f"refund-{order_id}")
            await publisher.publish_many([(commands, encode(message, envelope))])
        dead = await read_until(
            broker.bootstrap, Topic.DEAD_LETTER.qualified(settings.topic_prefix), lambda r: len(r) >= 2
        )
        assert {r.key: dict(r.headers)["dlq_reason"].decode() for r in dead} == {
            b"ord_credited": "rejected: order is credited: a refund would pay it twice",
            b"ord_compensated": "rejected: order is compensated: a refund would pay it twice",
        }
        labels = {"service": "payments", "group": "payments.commands", "reason": "order_credited"}
        await eventually(
            lambda: infra.registry.get_sample_value("credited_rejected_messages_total", labels) == 2, timeout_s=10
        )
        assert await infra.pool.fetchval("SELECT count(*) FROM refunds") == 0
        sim = app.state.providers.get("sim")
        for order_id in ("ord_credited", "ord_compensated"):  # the provider was never asked
            assert (await sim.query_refund(order_id, deterministic_id("refund", order_id))).status == "unknown"
        events = await read_all(broker.bootstrap, Topic.PAYMENTS_EVENTS.qualified(settings.topic_prefix))
        assert [decode(r.value, r.headers)[0] for r in events] == []
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        with contextlib.suppress(Exception):
            await infra.close()
