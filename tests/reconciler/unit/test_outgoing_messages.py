"""What the reconciler sends must always be a message its consumers accept, and a send the broker refuses
must be sent again: two bugs found by reading the code (issue 14)."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from contracts.base import Message
from contracts.codec import decode, envelope_for
from contracts.commands import BlockCredit
from contracts.events import CreditRejected, OrderHeld, OrderReviewRejected, OrderStatus, PaymentSucceeded
from reconciler.adapters.announcer import KafkaAnnouncer
from reconciler.adapters.metrics import PrometheusObservations
from reconciler.domain import Command, OrderState, Phase, Policy, StatusChange
from reconciler.engine import Engine
from reconciler.handlers import handle_event
from tests.reconciler.unit.fakes import InMemoryOrderStates
from tests.reconciler.unit.test_ticker import paid_elsewhere, ticker_on

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
LEDGER_PREFIX = "blocked: "  # the ledger echoes a BlockCredit's reason in its CreditRejected after this


class Sent:
    """A topic that keeps what it was given, acknowledged at once."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []

    async def send(self, *, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> "asyncio.Future[Any]":
        self.records.append((key, value, headers))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Clock:
    def now(self) -> float:
        return (T0 + timedelta(seconds=1)).timestamp()


def held(order_id: str) -> OrderHeld:
    return OrderHeld(
        order_id=order_id, user_id="u1", amount=60000, currency="CNY", channel="card", paid_at=T0,
        reason="first top-up above 50000", held_at=T0, expected_release_at=T0 + timedelta(minutes=15),
    )  # fmt: skip


def paid(order_id: str) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id, user_id="u1", amount=600, currency="CNY", channel="card", provider="sim",
        provider_txn_id=f"tx-{order_id}", paid_at=T0,
    )  # fmt: skip


async def test_a_review_rejected_with_a_200_character_reason_blocks_the_credit_and_the_partition_goes_on() -> None:
    status, ledger, payments = Sent(), Sent(), Sent()
    announcer = KafkaAnnouncer(status, ledger, payments, 0)  # type: ignore[arg-type]
    deps: dict[str, Any] = {
        "engine": Engine(InMemoryOrderStates(), Policy()),
        "announcer": announcer,
        "observe": PrometheusObservations(CollectorRegistry()),
        "clock": Clock(),
    }
    reason = "风控复核未通过" + "该账户近期存在多笔异常充值记录需要人工进一步核实" * 9  # the API accepts 200
    reason = reason[:200]
    assert len(reason) == 200
    rejection = OrderReviewRejected(order_id="ord_1", user_id="u1", reason=reason, rejected_at=T0)
    message: Message
    for message in (held("ord_1"), rejection, paid("ord_2")):
        await handle_event(message, envelope_for(message, producer="test"), 0, **deps)
    blocks = [decode(value, headers)[0] for _, value, headers in ledger.records]
    assert len(blocks) == 1 and isinstance(blocks[0], BlockCredit)
    echo = CreditRejected(  # what the ledger answers: it must fit that contract too
        order_id="ord_1", user_id="u1", reason=f"{LEDGER_PREFIX}{blocks[0].reason}", final=True, rejected_at=T0
    )
    assert echo.reason.startswith(LEDGER_PREFIX + "risk review rejected: 风控复核未通过")
    statuses = [decode(value, headers)[0] for _, value, headers in status.records]
    assert [s.status for s in statuses] == [OrderStatus.UNDER_REVIEW]  # type: ignore[attr-defined]


class Broker:
    """Announcements the broker acknowledged, and a switch to refuse the next round trip."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.accepted: list[str] = []
        self.refuse_next = False

    async def status(self, state: OrderState, change: StatusChange) -> None:
        self.pending.append(f"{state.order_id} status:{change.status.value}#{change.sequence}")

    async def command(self, state: OrderState, command: Command) -> None:
        self.pending.append(f"{state.order_id} {command.kind.value}#{command.attempt}")

    async def acknowledged(self) -> None:
        sent, self.pending = self.pending, []
        if self.refuse_next:
            self.refuse_next = False
            raise KafkaError("NOT_ENOUGH_REPLICAS: the broker refused the records")
        self.accepted += sent


async def test_an_announcement_the_broker_refused_is_sent_again_and_never_recorded_as_sent() -> None:
    table: dict[str, Any] = {"o1": paid_elsewhere("o1", seconds_ago=30)}  # overdue
    broker = Broker()
    ticker = ticker_on(table, broker)  # type: ignore[arg-type]
    broker.refuse_next = True
    await ticker.tick_once()  # the order is flagged: "delayed" and RetryCredit #1, refused
    assert broker.accepted == [] and "o1" in table
    for _ in range(3):
        await ticker.tick_once()
    assert broker.accepted[:2] == ["o1 status:delayed#1", "o1 RetryCredit#1"]
    assert OrderState.from_json(table["o1"]).phase is Phase.RETRYING
