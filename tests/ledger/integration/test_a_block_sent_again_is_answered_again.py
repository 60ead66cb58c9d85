"""A BlockCredit the ledger applied whose answer was lost on the way, on the real PostgreSQL: the reconciler sends it
again when no answer comes (its own wait, its own event id), and the ledger answers the re-send with the block it has,
moving nothing, so the order goes on to its refund instead of waiting for a person. A re-send repeated (the reconciler
crashed after sending it) is dropped by its event id, as any repeat."""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from contracts.base import Message
from contracts.codec import Envelope, decode, envelope_for
from contracts.events import CreditRejected
from ledger import handlers
from ledger.adapters.postgres import PostgresLedger
from ledger.bootstrap import MIGRATIONS
from reconciler.adapters.announcer import KafkaAnnouncer
from reconciler.domain import Command, CommandKind, OrderState, Policy
from servicekit.postgres import create_pool, migrate
from servicekit.uow import no_relay
from tests.ledger.outbox import outbox_messages
from tests.reconciler.unit.test_join import Harness, kinds, paid
from tests.reconciler.unit.worker import DEAD_LETTERS, TOPICS

POLICY = Policy(threshold_s=120, retry_attempts=2, retry_backoff_s=2, answer_wait_s=60, answer_resends=2)
DROP_EVERY_CREDIT = handlers.FaultPolicy(drop_credit_share=1.0)


@pytest.fixture
async def pool(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, f"{isolation}_ledger", min_size=1, max_size=4)
    await migrate(pool, MIGRATIONS)
    yield pool
    await pool.close()


def as_sent(state: OrderState, command: Command) -> tuple[Message, Envelope]:
    """`command` as the reconciler's announcer puts it on the broker (a fresh announcer: as any worker would)."""
    announcer = KafkaAnnouncer(TOPICS, DEAD_LETTERS, lambda: None)
    announcer.command(state, command)
    [(topic, record)] = announcer.records()
    assert topic == TOPICS["ledger"]
    return decode(record.value, record.headers)


async def test_a_block_credit_sent_again_after_its_answer_was_lost_is_answered_again_and_blocks_nothing_more(
    pool: asyncpg.Pool,
) -> None:
    def uow() -> PostgresLedger:
        return PostgresLedger(pool, producer="ledger", topic_prefix="", on_commit=no_relay)

    async def ledger(message: Message, envelope: Envelope) -> list[CreditRejected]:
        """The ledger consumes one record; the answers it wrote to its outbox."""
        before = await pool.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
        await handlers.handle_batch([(message, envelope)], uow=uow, faults=DROP_EVERY_CREDIT)
        return [m for _, m, _ in await outbox_messages(pool, before) if isinstance(m, CreditRejected)]

    async def books() -> tuple[object, ...]:
        return (
            await pool.fetchval("SELECT count(*) FROM transactions"),
            await pool.fetchval("SELECT count(*) FROM entries"),
            tuple(await pool.fetch("SELECT order_id, reason FROM credit_blocks ORDER BY order_id")),
        )

    reconciler = Harness(POLICY)
    payment = paid()  # the ledger records it and drops its credit: the very case the reconciler repairs
    reconciler.event(payment)
    await ledger(payment, envelope_for(payment, producer="payments", event_id="ord_1-pay"))
    reconciler.tick(121, 121)  # overdue: RetryCredit #1, #2 (lost on the way: the ledger never sees them)
    reconciler.tick(123, 123)
    effects = reconciler.tick(127, 127)
    assert kinds(effects) == ["BlockCredit#1", "status:remediating"]
    [block] = [e for e in effects if isinstance(e, Command)]
    first = await ledger(*as_sent(reconciler.state(), block))
    assert [(m.final, m.reason) for m in first] == [(True, "blocked: credit retries exhausted")]
    blocked = await books()
    assert blocked[2] == (("ord_1", "credit retries exhausted"),)

    # The answer is lost: the reconciler never reads it, and sends the block again after its wait.
    [resent] = [e for e in reconciler.tick(187, 187) if isinstance(e, Command)]
    assert (resent.kind, resent.resent) == (CommandKind.BLOCK_CREDIT, 1)
    message, envelope = as_sent(reconciler.state(), resent)
    again = await ledger(message, envelope)
    assert [(m.final, m.reason) for m in again] == [(True, "blocked: credit retries exhausted")], (
        "the re-sent block is dropped unanswered: the order waits for a person although the ledger blocked it"
    )
    assert await books() == blocked, "the re-send moves nothing"

    assert await ledger(message, envelope) == [], "a repeat of the re-send is dropped by its event id"
    assert await ledger(*as_sent(reconciler.state(), resent)) == [], "so is the same re-send built after a crash"

    assert kinds(reconciler.event(again[0], now=190)) == ["IssueRefund#1"], "the answer moves the order on"
    assert await books() == blocked
