"""An IssueRefund payments executed whose outcome was lost on the way, on the real PostgreSQL: the reconciler sends it
again when no answer comes (its own wait, its own event id), and payments answers the re-send with the outcome it has,
never asking the provider again, so the order settles refunded instead of waiting for a person. A refund still in
flight is not asked about by the re-send either (its follow-up announces it). A re-send repeated (the reconciler
crashed after sending it) is dropped by its event id, as any repeat."""

import asyncpg
import pytest

from contracts.base import Message
from contracts.codec import Envelope, decode
from contracts.commands import IssueRefund
from contracts.events import RefundSucceeded
from payments.ports import RefundAnswer
from payments.refunds import MAX_ATTEMPTS, handle_issue_refund
from reconciler.adapters.announcer import KafkaAnnouncer
from reconciler.domain import Command, CommandKind, OrderState, Phase, Policy
from tests.ledger.outbox import outbox_messages
from tests.payments.integration.units import units_of_work
from tests.payments.unit.test_refunds import Pauses, Providers, ScriptedProvider
from tests.reconciler.unit.test_join import Harness, paid, rejected
from tests.reconciler.unit.worker import DEAD_LETTERS, TOPICS

POLICY = Policy(threshold_s=120, retry_attempts=2, retry_backoff_s=2, answer_wait_s=60, answer_resends=2)
PAID = """
INSERT INTO orders (order_id, user_id, amount, currency, channel, payment_status, status, provider, provider_txn_id,
                    created_at, paid_at)
VALUES ('ord_1', 'u1', 600, 'CNY', 'card', 'succeeded', 'remediating', 'alipay', 'tx', now(), now())
"""


def as_sent(state: OrderState, command: Command) -> tuple[IssueRefund, Envelope]:
    """`command` as the reconciler's announcer puts it on the broker (a fresh announcer: as any worker would)."""
    announcer = KafkaAnnouncer(TOPICS, DEAD_LETTERS, lambda: None)
    announcer.command(state, command)
    [(topic, record)] = announcer.records()
    assert topic == TOPICS["payments"]
    message, envelope = decode(record.value, record.headers)
    assert isinstance(message, IssueRefund)
    return message, envelope


class Payments:
    """payments' refund handler on the test's schema, with a provider that records what it is asked."""

    def __init__(self, pool: asyncpg.Pool, provider: ScriptedProvider) -> None:
        self.pool, self.provider = pool, provider
        self.uow = units_of_work(pool)

    async def consume(self, sent: tuple[IssueRefund, Envelope]) -> list[Message]:
        """payments consumes one IssueRefund; what it announced (its outbox, left unpublished)."""
        before = await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
        await handle_issue_refund(
            *sent, uow=self.uow, providers=Providers(self.provider), provider_timeout_s=1.0, sleep=Pauses()
        )
        return [message for _, message, _ in await outbox_messages(self.pool, before)]


def refunding() -> tuple[Harness, Command]:
    """An order paid and refused for good by the ledger: the reconciler sent IssueRefund at 5 s."""
    reconciler = Harness(POLICY)
    reconciler.event(paid())
    effects = reconciler.event(rejected(), now=5)
    [refund] = [e for e in effects if isinstance(e, Command)]
    assert refund.kind is CommandKind.ISSUE_REFUND
    return reconciler, refund


def resent(reconciler: Harness, at: float) -> Command:
    [command] = [e for e in reconciler.tick(at, at) if isinstance(e, Command)]
    assert (command.kind, command.resent) == (CommandKind.ISSUE_REFUND, 1)
    return command


@pytest.mark.parametrize("provider_says", ["succeeded", "failed"])
async def test_an_issue_refund_sent_again_after_its_outcome_was_lost_is_answered_again_and_refunds_nothing_more(
    payments_pool: asyncpg.Pool, provider_says: str
) -> None:
    await payments_pool.execute(PAID)
    payments = Payments(payments_pool, ScriptedProvider([RefundAnswer(provider_says, "rf_1", "card closed")], []))
    reconciler, refund = refunding()
    first = await payments.consume(as_sent(reconciler.state(), refund))
    assert [type(m).__name__ for m in first] == [f"Refund{provider_says.capitalize()}"]

    # The outcome is lost: the reconciler never reads it, and sends the refund again after its wait.
    command = resent(reconciler, 65)
    sent = as_sent(reconciler.state(), command)
    again = await payments.consume(sent)
    assert [type(m).__name__ for m in again] == [type(first[0]).__name__], (
        "the re-sent refund is dropped unanswered: the order waits for a person though payments has the outcome"
    )
    assert payments.provider.calls == ["refund"], "the provider is asked once: the re-send refunds nothing"
    assert await payments_pool.fetchval("SELECT count(*) FROM refunds") == 1

    assert await payments.consume(sent) == [], "a repeat of the re-send is dropped by its event id"
    assert await payments.consume(as_sent(reconciler.state(), command)) == [], "so is the same re-send after a crash"
    reconciler.event(again[0], now=70)
    settled = Phase.REFUNDED if isinstance(again[0], RefundSucceeded) else Phase.ESCALATED
    assert reconciler.state().phase is settled, "the answer settles the order"


async def test_an_issue_refund_sent_again_while_its_refund_is_pending_asks_the_provider_nothing(
    payments_pool: asyncpg.Pool,
) -> None:
    await payments_pool.execute(PAID)
    pending = RefundAnswer("pending", "rf_1")
    payments = Payments(payments_pool, ScriptedProvider([pending], [pending] * MAX_ATTEMPTS))
    reconciler, refund = refunding()
    assert await payments.consume(as_sent(reconciler.state(), refund)) == []
    asked = list(payments.provider.calls)
    assert await payments.consume(as_sent(reconciler.state(), resent(reconciler, 65))) == []
    assert payments.provider.calls == asked, "a refund in flight is its follow-up's to ask about"
    status = await payments_pool.fetchval("SELECT status FROM refunds WHERE order_id = 'ord_1'")
    assert status == "pending"
