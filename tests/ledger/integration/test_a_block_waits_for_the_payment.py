"""A BlockCredit can only win against a payment the ledger has had the chance to credit, on the real broker and
PostgreSQL. The reconciler's retries and then its block reach the ledger before the order's PaymentSucceeded (the
payments consumer lagging, as after the database's disk was full): the block waits with the parked retries, the
payment credits the order once, and the ledger never says "blocked" (the reconciler refunds only after that final
rejection). A block for an order whose payment never comes applies when the park time ends, with the retry's dead
letter; a block for an order with no parked retry (rejected in risk review) applies at once."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson

from contracts.base import Message
from contracts.codec import decode, encode, envelope_for
from contracts.commands import BlockCredit, RetryCredit
from contracts.events import CreditPosted, CreditRejected
from contracts.topics import Topic
from ledger import handlers
from ledger.adapters.parking import DeadLetterRoute, ParkedRetrySweeper
from ledger.adapters.postgres import PostgresLedger
from ledger.bootstrap import MIGRATIONS, build
from ledger.config import Settings
from servicekit.infrastructure import Infrastructure
from servicekit.kafka import KafkaPublisher
from servicekit.postgres import create_pool, migrate
from servicekit.uow import no_relay
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all, read_until
from tests.ledger.messages import AMOUNT, payment
from tests.service_settings import settings_for

PARK_S = 2.0
EXHAUSTED = "credit retries exhausted"


def retry(order_id: str, attempt: int) -> RetryCredit:
    return RetryCredit(
        order_id=order_id,
        user_id=f"user-{order_id}",
        amount=AMOUNT,
        currency="CNY",
        attempt=attempt,
        requested_at=datetime.now(UTC),
        provider_txn_id=f"tx-{order_id}",
    )


def block(order_id: str, reason: str = EXHAUSTED) -> BlockCredit:
    return BlockCredit(order_id=order_id, user_id=f"user-{order_id}", reason=reason, requested_at=datetime.now(UTC))


class Ledger:
    """A running ledger (consumers, relay, sweeper) and a way to send it messages."""

    def __init__(self, settings: Settings, infra: Infrastructure, publisher: KafkaPublisher) -> None:
        self.settings, self.infra, self.publisher = settings, infra, publisher

    async def send(self, topic: Topic, message: Message, event_id: str) -> None:
        record = encode(message, envelope_for(message, producer="t", event_id=event_id))
        await self.publisher.publish_many([(topic.qualified(self.settings.topic_prefix), record)])

    def topic(self, topic: Topic) -> str:
        return topic.qualified(self.settings.topic_prefix)


@contextlib.asynccontextmanager
async def running_ledger(broker: Broker, database_url: str, isolation: str, park_s: float) -> AsyncIterator[Ledger]:
    settings = settings_for(Settings, broker, database_url, isolation, retry_park_s=park_s)
    infra, app = await build(settings)
    sweeper: ParkedRetrySweeper = app.state.parked_retry_sweeper
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        for consumer in infra.consumers:
            await consumer.start()
        tasks = [asyncio.create_task(c.run()) for c in infra.consumers]
        tasks += [asyncio.create_task(infra.relay.run()), asyncio.create_task(sweeper.run())]
        yield Ledger(settings, infra, publisher)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        with contextlib.suppress(Exception):
            await infra.close()


async def test_a_block_before_the_orders_payment_waits_and_the_payment_credits_once_with_no_blocked_rejection(
    broker: Broker, database_url: str, isolation: str
) -> None:
    # A park time no slow test machine outlasts: here the payment comes, only later than the block.
    async with running_ledger(broker, database_url, isolation, park_s=60.0) as ledger:
        await _the_payment_after_the_block_credits_once(broker, ledger)


async def _the_payment_after_the_block_credits_once(broker: Broker, ledger: Ledger) -> None:
    pool = ledger.infra.pool
    await ledger.send(Topic.LEDGER_COMMANDS, retry("ord_late", 1), "late-retry-1")
    await ledger.send(Topic.LEDGER_COMMANDS, retry("ord_late", 2), "late-retry-2")
    await ledger.send(Topic.LEDGER_COMMANDS, block("ord_late"), "late-block")
    applied = "SELECT count(*) = 1 FROM processed_events WHERE event_id = 'late-block'"
    await eventually(lambda: pool.fetchval(applied), timeout_s=60)
    assert await pool.fetchval("SELECT count(*) FROM credit_blocks") == 0  # it waits: no payment to credit yet
    assert await pool.fetchval("SELECT retries FROM parked_retries WHERE order_id = 'ord_late'") == 2

    await ledger.send(Topic.PAYMENTS_EVENTS, payment("ord_late"), "late-pay")
    credited = "SELECT count(*) = 1 FROM transactions WHERE order_id = 'ord_late'"
    await eventually(lambda: pool.fetchval(credited), timeout_s=60)
    assert await pool.fetchval("SELECT count(*) FROM parked_retries") == 0
    assert await pool.fetchval("SELECT count(*) FROM credit_blocks") == 0
    await eventually(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), timeout_s=30)
    announced = [
        decode(r.value, r.headers)[0] for r in await read_all(broker.bootstrap, ledger.topic(Topic.LEDGER_EVENTS))
    ]
    # The payment's credit only: no final CreditRejected, so the reconciler has nothing to refund on.
    assert [(type(m), m.order_id) for m in announced] == [(CreditPosted, "ord_late")]
    assert await read_all(broker.bootstrap, ledger.topic(Topic.DEAD_LETTER)) == []
    wallets = await pool.fetch("SELECT user_id, balance FROM accounts WHERE kind = 'wallet'")
    assert {r["user_id"]: r["balance"] for r in wallets} == {"user-ord_late": AMOUNT}


async def test_a_block_for_an_order_never_paid_applies_at_once_without_retries_and_after_the_park_time_with_them(
    broker: Broker, database_url: str, isolation: str
) -> None:
    async with running_ledger(broker, database_url, isolation, park_s=PARK_S) as ledger:
        await _blocks_of_unpaid_orders_apply(broker, ledger)


async def _blocks_of_unpaid_orders_apply(broker: Broker, ledger: Ledger) -> None:
    pool = ledger.infra.pool
    # Rejected in risk review: no payment, no retry; the block applies at once.
    await ledger.send(Topic.LEDGER_COMMANDS, block("ord_rejected", "risk review rejected: fraud"), "rejected-block")
    events = ledger.topic(Topic.LEDGER_EVENTS)
    await read_until(broker.bootstrap, events, lambda r: len(r) >= 1)
    assert await pool.fetchval("SELECT count(*) FROM parked_retries") == 0
    # Retried, then blocked, and its payment never comes: the block waits out the park time, then applies.
    await ledger.send(Topic.LEDGER_COMMANDS, retry("ord_ghost", 1), "ghost-retry-1")
    await ledger.send(Topic.LEDGER_COMMANDS, block("ord_ghost"), "ghost-block")
    # One snapshot: the block waits with the parked retry and has not been applied.
    waiting = (
        "SELECT block_reason IS NOT NULL AND NOT EXISTS (SELECT 1 FROM credit_blocks WHERE order_id = 'ord_ghost')"
        " FROM parked_retries WHERE order_id = 'ord_ghost'"
    )
    await eventually(lambda: pool.fetchval(waiting), timeout_s=60)
    announced = await read_until(broker.bootstrap, events, lambda r: len(r) >= 2)
    answers = {m.order_id: m for m in (decode(r.value, r.headers)[0] for r in announced)}
    assert {o: (type(m), getattr(m, "final", None), getattr(m, "reason", None)) for o, m in answers.items()} == {
        "ord_rejected": (CreditRejected, True, "blocked: risk review rejected: fraud"),
        "ord_ghost": (CreditRejected, True, f"blocked: {EXHAUSTED}"),
    }
    blocks = await pool.fetch("SELECT order_id, reason FROM credit_blocks ORDER BY order_id")
    assert [tuple(r) for r in blocks] == [("ord_ghost", EXHAUSTED), ("ord_rejected", "risk review rejected: fraud")]
    dead = await read_until(broker.bootstrap, ledger.topic(Topic.DEAD_LETTER), lambda r: len(r) >= 1)
    assert [(r.key, dict(r.headers)["dlq_reason"].decode().split(":")[0]) for r in dead] == [
        (b"ord_ghost", "no_payment_fact")
    ]
    assert await pool.fetchval("SELECT count(*) FROM parked_retries") == 0
    # Its payment, should it come after all, is refused for good: the block stands.
    await ledger.send(Topic.PAYMENTS_EVENTS, payment("ord_ghost"), "ghost-pay")
    refused = await read_until(broker.bootstrap, events, lambda r: len(r) >= 3)
    late = [decode(r.value, r.headers)[0] for r in refused if r.key == b"ord_ghost"]
    assert [(type(m), getattr(m, "final", None)) for m in late] == [(CreditRejected, True)] * 2
    assert await pool.fetchval("SELECT count(*) FROM transactions") == 0


async def test_a_sweep_applies_a_waiting_block_whose_reason_fills_the_contract_and_expires_every_parked_retry(
    database_url: str, isolation: str
) -> None:
    pool = await create_pool(database_url, f"{isolation}_ledger", min_size=1, max_size=2)
    try:
        await migrate(pool, MIGRATIONS)
        longest = "r" * 200  # as long as BlockCredit allows: "blocked: " in front would be 209
        batch = [retry("ord_long", 1), block("ord_long", longest), retry("ord_ghost", 1)]
        await handlers.handle_batch(
            [(m, envelope_for(m, producer="t")) for m in batch],
            uow=lambda: PostgresLedger(pool, producer="ledger", topic_prefix="", on_commit=no_relay),
        )
        # Expired without waiting out the park time; the sweep takes both in one transaction.
        await pool.execute("UPDATE parked_retries SET first_seen = now() - make_interval(mins => 10)")
        route = DeadLetterRoute("dlq", "commands", "ledger.commands", "events", "ledger")
        sweeper = ParkedRetrySweeper(pool, route, park_s=PARK_S, interval_s=PARK_S, on_commit=lambda: None)

        assert sorted(await sweeper.sweep()) == ["ord_ghost", "ord_long"]
        assert await pool.fetchval("SELECT count(*) FROM parked_retries") == 0
        blocks = await pool.fetch("SELECT order_id, reason FROM credit_blocks")
        assert [tuple(r) for r in blocks] == [("ord_long", longest)]
        rows = await pool.fetch("SELECT topic, key, value, headers FROM outbox")
        assert sorted((r["topic"], r["key"]) for r in rows) == [
            ("dlq", b"ord_ghost"),
            ("dlq", b"ord_long"),
            ("events", b"ord_long"),
        ]
        [event] = [r for r in rows if r["topic"] == "events"]
        answer, _ = decode(event["value"], [(k, v.encode()) for k, v in orjson.loads(event["headers"])])
        assert isinstance(answer, CreditRejected) and answer.final
        assert answer.reason == "blocked: " + longest[:190] + "\u2026"
    finally:
        await pool.close()


async def test_a_refund_block_takes_the_place_of_a_liftable_one_in_a_batch_and_in_a_sweep_and_never_the_reverse(
    database_url: str, isolation: str
) -> None:
    pool = await create_pool(database_url, f"{isolation}_ledger", min_size=1, max_size=2)
    review, support = "risk review rejected: stolen card", "support refund by agent-7: wrote in"

    async def batch(*messages: Message) -> None:
        await handlers.handle_batch(
            [(m, envelope_for(m, producer="t")) for m in messages],
            uow=lambda: PostgresLedger(pool, producer="ledger", topic_prefix="", on_commit=no_relay),
        )

    try:
        await migrate(pool, MIGRATIONS)
        # In a batch: the reconciler's block first, then a person's refund, then the reconciler's again.
        await batch(block("ord_batch"))
        await batch(block("ord_batch", support), block("ord_batch"))
        # In a sweep: a review's rejection waited with a parked retry of an order that holds a liftable block (as a
        # block written before this rule may), and an order whose refund block is held is not downgraded.
        await batch(retry("ord_swept", 1), block("ord_swept", review), retry("ord_kept", 1), block("ord_kept"))
        held = "INSERT INTO credit_blocks (order_id, reason) VALUES ('ord_swept', $1), ('ord_kept', $2)"
        await pool.execute(held, EXHAUSTED, support)
        await pool.execute("UPDATE parked_retries SET first_seen = now() - make_interval(mins => 10)")
        route = DeadLetterRoute("dlq", "commands", "ledger.commands", "events", "ledger")
        sweeper = ParkedRetrySweeper(pool, route, park_s=PARK_S, interval_s=PARK_S, on_commit=lambda: None)
        assert sorted(await sweeper.sweep()) == ["ord_kept", "ord_swept"]

        blocks = {r["order_id"]: r["reason"] for r in await pool.fetch("SELECT order_id, reason FROM credit_blocks")}
        assert blocks == {"ord_batch": support, "ord_swept": review, "ord_kept": support}
    finally:
        await pool.close()
