"""A RetryCredit credits only an order whose recorded payment it matches, on the real broker and PostgreSQL: one
differing from the payment is dead-lettered at once with its reason, counted, and moves nothing; one for an order
with no payment yet is parked, absorbed by the payment when it comes (credited once, by the payment) and
dead-lettered as no_payment_fact, moving nothing, when none comes within the park time; the reconciler's retry after
a dropped credit still credits once."""

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime

from contracts.base import Message
from contracts.codec import decode, encode, envelope_for
from contracts.commands import RetryCredit
from contracts.events import CreditPosted
from contracts.topics import Topic
from ledger.adapters.parking import ParkedRetrySweeper
from ledger.bootstrap import build
from ledger.config import Settings
from servicekit.kafka import KafkaPublisher
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all, read_until
from tests.ledger.messages import payment
from tests.service_settings import settings_for

AMOUNT = 600
PARK_S = 2.0


def retry(order_id: str, attempt: int, amount: int = AMOUNT) -> RetryCredit:
    return RetryCredit(
        order_id=order_id,
        user_id=f"user-{order_id}",
        amount=amount,
        currency="CNY",
        attempt=attempt,
        requested_at=datetime.now(UTC),
        provider_txn_id=f"tx-{order_id}",
    )


async def test_a_contradicting_retry_is_refused_at_once_a_forged_one_after_parking_a_dropped_credit_retried_once(
    broker: Broker, database_url: str, isolation: str
) -> None:
    # Every credit from a payment event is dropped: only a retry can credit, as after a real dropped credit.
    settings = settings_for(
        Settings,
        broker,
        database_url,
        isolation,
        fault_drop_credit_share=1.0,
        retry_park_s=PARK_S,
        environment="development",
    )
    infra, app = await build(settings)
    sweeper: ParkedRetrySweeper = app.state.parked_retry_sweeper
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    tasks: list[asyncio.Task[None]] = []
    commands = Topic.LEDGER_COMMANDS.qualified(settings.topic_prefix)

    async def send(topic: str, message: Message, event_id: str) -> None:
        await publisher.publish_many([(topic, encode(message, envelope_for(message, producer="t", event_id=event_id)))])

    try:
        for consumer in infra.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run()) for c in infra.consumers]
        tasks += [asyncio.create_task(infra.relay.run()), asyncio.create_task(sweeper.run())]
        await send(Topic.PAYMENTS_EVENTS.qualified(settings.topic_prefix), payment("ord_paid"), "paid-pay")
        has_fact = "SELECT count(*) = 1 FROM payment_facts WHERE order_id = 'ord_paid'"
        await eventually(lambda: infra.pool.fetchval(has_fact), timeout_s=60)

        dead_letters = Topic.DEAD_LETTER.qualified(settings.topic_prefix)
        await send(commands, retry("ord_ghost", 1), "ghost-retry-1")  # never paid: a made-up order
        await send(commands, retry("ord_paid", 1, amount=AMOUNT * 100), "paid-retry-1")  # more than was paid
        # The contradicting retry is refused at once; the made-up order's is parked, then dead-lettered.
        dead = await read_until(broker.bootstrap, dead_letters, lambda r: len(r) >= 1)
        assert [(r.key, dict(r.headers)["dlq_reason"].decode()) for r in dead] == [
            (
                b"ord_paid",
                f"rejected: the retry does not match the payment: amount {AMOUNT * 100} is not the paid {AMOUNT}",
            )
        ]
        parked = "SELECT order_id, retries FROM parked_retries"
        assert [tuple(r) for r in await infra.pool.fetch(parked)] == [("ord_ghost", 1)]
        dead = await read_until(broker.bootstrap, dead_letters, lambda r: len(r) >= 2)
        ghost = dict(dead[1].headers)
        assert dead[1].key == b"ord_ghost"
        assert (
            ghost["dlq_reason"].decode()
            == f"no_payment_fact: no PaymentSucceeded for order ord_ghost within {PARK_S:g} s"
        )
        assert ghost["dlq_source_topic"].decode() == commands
        forged, envelope = decode(dead[1].value, dead[1].headers)  # the retry as it came
        assert isinstance(forged, RetryCredit) and (forged.order_id, forged.attempt) == ("ord_ghost", 1)
        assert envelope.event_id == "ghost-retry-1"
        assert await infra.pool.fetch(parked) == []

        def rejected(label: str) -> float | None:
            labels = {"service": "ledger", "group": "ledger.commands", "reason": label}
            return infra.registry.get_sample_value("credited_rejected_messages_total", labels)

        # Counted once the broker acknowledged the dead letter, which a reader may see a moment before.
        await eventually(lambda: rejected("no_payment_fact") == rejected("payment_fact_mismatch") == 1, timeout_s=10)
        assert await infra.pool.fetchval("SELECT count(*) FROM transactions") == 0
        assert await infra.pool.fetchval("SELECT count(*) FROM accounts") == 0

        await send(commands, retry("ord_paid", 2), "paid-retry-2")
        await send(commands, retry("ord_paid", 3), "paid-retry-3")
        credited = "SELECT count(*) = 1 FROM transactions WHERE order_id = 'ord_paid'"
        await eventually(lambda: infra.pool.fetchval(credited), timeout_s=60)
        await eventually(lambda: infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
        announced = await read_until(
            broker.bootstrap, Topic.LEDGER_EVENTS.qualified(settings.topic_prefix), lambda r: len(r) >= 2
        )
        messages = [decode(r.value, r.headers)[0] for r in announced]
        assert Counter(m.order_id for m in messages) == {"ord_paid": 2}  # the credit, and the next retry's echo
        assert all(isinstance(m, CreditPosted) for m in messages)
        books = await infra.pool.fetch("SELECT order_id, count(*) AS n FROM transactions GROUP BY order_id")
        assert {r["order_id"]: r["n"] for r in books} == {"ord_paid": 1}
        wallets = await infra.pool.fetch("SELECT user_id, balance FROM accounts WHERE kind = 'wallet'")
        assert {r["user_id"]: r["balance"] for r in wallets} == {"user-ord_paid": AMOUNT}
        assert len(await read_all(broker.bootstrap, Topic.DEAD_LETTER.qualified(settings.topic_prefix))) == 2
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        with contextlib.suppress(Exception):
            await infra.close()


async def test_a_retry_before_its_payment_is_parked_and_the_payment_credits_once_and_clears_it(
    broker: Broker, database_url: str, isolation: str
) -> None:
    settings = settings_for(Settings, broker, database_url, isolation, retry_park_s=PARK_S)
    infra, app = await build(settings)
    sweeper: ParkedRetrySweeper = app.state.parked_retry_sweeper
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    tasks: list[asyncio.Task[None]] = []

    async def send(topic: Topic, message: Message, event_id: str) -> None:
        record = encode(message, envelope_for(message, producer="t", event_id=event_id))
        await publisher.publish_many([(topic.qualified(settings.topic_prefix), record)])

    def counted(metric: str, labels: dict[str, str]) -> float:
        return infra.registry.get_sample_value(metric, {"service": "ledger", **labels}) or 0.0

    try:
        for consumer in infra.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run()) for c in infra.consumers]
        tasks += [asyncio.create_task(infra.relay.run()), asyncio.create_task(sweeper.run())]
        # The reconciler's first retries of a late-paid order reach the ledger before its payment does.
        await send(Topic.LEDGER_COMMANDS, retry("ord_late", 1), "late-retry-1")
        await send(Topic.LEDGER_COMMANDS, retry("ord_late", 2), "late-retry-2")
        parked = "SELECT retries FROM parked_retries WHERE order_id = 'ord_late'"

        async def both_parked() -> bool:
            return await infra.pool.fetchval(parked) == 2

        await eventually(both_parked, timeout_s=60)
        assert counted("credited_ledger_parked_retries_total", {"outcome": "parked"}) == 2
        assert await infra.pool.fetchval("SELECT count(*) FROM transactions") == 0

        await send(Topic.PAYMENTS_EVENTS, payment("ord_late"), "late-pay")
        credited = "SELECT count(*) = 1 FROM transactions WHERE order_id = 'ord_late'"
        await eventually(lambda: infra.pool.fetchval(credited), timeout_s=60)
        assert await infra.pool.fetchval("SELECT count(*) FROM parked_retries") == 0
        assert counted("credited_ledger_parked_retries_total", {"outcome": "absorbed"}) == 1
        # Past the park time the sweeper has nothing to send: the payment answered the retries.
        await asyncio.sleep(PARK_S * 2)
        assert await read_all(broker.bootstrap, Topic.DEAD_LETTER.qualified(settings.topic_prefix)) == []
        rejected = {"group": "ledger.commands", "reason": "no_payment_fact"}
        assert counted("credited_rejected_messages_total", rejected) == 0
        await eventually(lambda: infra.pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
        announced = await read_all(broker.bootstrap, Topic.LEDGER_EVENTS.qualified(settings.topic_prefix))
        assert [type(decode(r.value, r.headers)[0]) for r in announced] == [CreditPosted]  # the payment's credit
        wallets = await infra.pool.fetch("SELECT user_id, balance FROM accounts WHERE kind = 'wallet'")
        assert {r["user_id"]: r["balance"] for r in wallets} == {"user-ord_late": AMOUNT}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        with contextlib.suppress(Exception):
            await infra.close()


async def test_a_sweep_waits_for_the_batch_recording_the_payment_and_dead_letters_nothing(
    broker: Broker, database_url: str, isolation: str
) -> None:
    settings = settings_for(Settings, broker, database_url, isolation, retry_park_s=PARK_S)
    infra, app = await build(settings)
    sweeper: ParkedRetrySweeper = app.state.parked_retry_sweeper
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        for consumer in infra.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run()) for c in infra.consumers]
        message = retry("ord_race", 1)
        record = encode(message, envelope_for(message, producer="t", event_id="race-retry-1"))
        await publisher.publish_many([(Topic.LEDGER_COMMANDS.qualified(settings.topic_prefix), record)])
        await eventually(lambda: infra.pool.fetchval("SELECT count(*) = 1 FROM parked_retries"), timeout_s=60)
        await asyncio.sleep(PARK_S + 0.5)  # expired: the next sweep would dead-letter it, were it still unpaid

        # A batch recording the order's payment, caught between writing the payment and clearing the parked row.
        async with infra.pool.acquire() as batch:
            transaction = batch.transaction()
            await transaction.start()
            await batch.execute("SELECT ledger_lock_orders($1::text[])", ["ord_race"])
            await batch.execute(
                "INSERT INTO payment_facts (order_id, user_id, amount, currency, provider_txn_id)"
                " VALUES ('ord_race', 'user-ord_race', $1, 'CNY', 'tx-ord_race')",
                AMOUNT,
            )
            sweep = asyncio.create_task(sweeper.sweep())
            waiting = "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            while not sweep.done() and not await infra.pool.fetchval(waiting):
                await asyncio.sleep(0.01)
            await batch.execute("DELETE FROM parked_retries WHERE order_id = 'ord_race'")
            await transaction.commit()
        assert await sweep == []
        assert await infra.pool.fetchval("SELECT count(*) FROM outbox") == 0
        assert await infra.pool.fetchval("SELECT count(*) FROM parked_retries") == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        with contextlib.suppress(Exception):
            await infra.close()
