"""The reconciler's real engine, use cases and Prometheus metrics, fed the payments and credits a scenario
makes up, with a ledger and a payments service that answer its commands the way the scenario says.

Only the faust adapter is left out; what it does for the metrics is done here the same way: the watermark
lag is now minus the safe time handed to the tick, the overdue gauge counts the orders table.py does, and the
settled orders whose retention the tick says has ended are dropped from the table and counted (the
scenarios keep a short retention, which keeps long scenarios fast).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from prometheus_client import CollectorRegistry

from contracts.base import Message
from contracts.codec import envelope_for
from contracts.events import CreditPosted, CreditRejected, PaymentSucceeded, RefundFailed, RefundSucceeded
from reconciler.adapters.metrics import PrometheusObservations
from reconciler.adapters.table import counts_overdue
from reconciler.domain import CaseOpened, Command, CommandKind, OrderState, Policy, StatusChange
from reconciler.engine import Engine
from reconciler.handlers import handle_event, handle_tick

AMOUNT = 600


class Ledger(Enum):
    """How the ledger answers the reconciler's commands for an order: credit it, refuse it for now (a
    retryable rejection) or for good, or answer nothing at all (the ledger is down)."""

    CREDITS = "credits"
    REFUSES_FOR_NOW = "refuses_for_now"
    REFUSES = "refuses"
    SILENT = "silent"


class States:
    """The OrderStates port in a dict of states (the faust table in production)."""

    def __init__(self) -> None:
        self.data: dict[str, OrderState] = {}

    def get(self, order_id: str) -> OrderState | None:
        return self.data.get(order_id)

    def put(self, state: OrderState) -> None:
        self.data[state.order_id] = state

    def values(self) -> Iterator[OrderState]:
        yield from list(self.data.values())


@dataclass
class Announcements:
    """The Announcer port: what the reconciler told the user (statuses), the other services (commands) and
    support (cases). Each round is acknowledged at once here, so what is queued counts as sent."""

    statuses: list[tuple[OrderState, StatusChange]] = field(default_factory=list)
    commands: list[tuple[OrderState, Command]] = field(default_factory=list)
    cases: list[tuple[OrderState, CaseOpened]] = field(default_factory=list)

    def status(self, state: OrderState, change: StatusChange) -> None:
        self.statuses.append((state, change))

    def command(self, state: OrderState, command: Command) -> None:
        self.commands.append((state, command))

    def case(self, state: OrderState, case: CaseOpened) -> None:
        self.cases.append((state, case))


@dataclass
class VirtualClock:
    at: datetime


class Reconciler:
    """One reconciler instance; `ledger(order_id)` and `refunds(order_id)` decide how the others answer."""

    def __init__(
        self,
        registry: CollectorRegistry,
        policy: Policy,
        start: datetime,
        *,
        ledger: Callable[[str], Ledger] = lambda _: Ledger.CREDITS,
        refunds: Callable[[str], bool] = lambda _: True,
    ) -> None:
        self.observe = PrometheusObservations(registry)
        self.states = States()
        self.engine = Engine(self.states, policy)
        self.announced = Announcements()
        self.clock = VirtualClock(start)
        self.ledger = ledger
        self.refunds = refunds
        self.users: dict[str, str] = {}
        self._answered = 0

    @property
    def now(self) -> datetime:
        return self.clock.at

    async def apply(self, message: Message, producer: str) -> None:
        event_type = envelope_for(message, producer=producer, occurred_at=self.now).event_type
        handle_event(
            message,
            event_type,
            0,
            self.now,
            engine=self.engine,
            announcer=self.announced,
            observe=self.observe,
            arrived_at=self.now,  # read as soon as published, as a reconciler keeping up does
        )

    async def pay(self, order_id: str, channel: str, *, ago_s: float = 0.0) -> None:
        self.users[order_id] = f"u-{order_id}"
        paid_at = self.now - timedelta(seconds=ago_s)
        payment = PaymentSucceeded(
            order_id=order_id,
            user_id=self.users[order_id],
            amount=AMOUNT,
            currency="CNY",
            channel=channel,
            provider="sim",
            provider_txn_id=f"tx-{order_id}",
            paid_at=paid_at,
        )
        await self.apply(payment, "payments")

    async def credit(self, order_id: str) -> None:
        user = self.users.setdefault(order_id, f"u-{order_id}")
        posted = CreditPosted(
            order_id=order_id,
            user_id=user,
            amount=AMOUNT,
            currency="CNY",
            transaction_id=f"t-{order_id}",
            credited_at=self.now,
        )
        await self.apply(posted, "ledger")

    async def step(self, now: datetime, *, behind_s: float = 0.0) -> None:
        """Let time pass to `now` with the credit stream known complete up to `behind_s` before it, then
        let the ledger and payments answer what was asked of them."""
        self.clock.at = now
        safe_time = now - timedelta(seconds=behind_s)
        expired = handle_tick(0, now, safe_time, engine=self.engine, announcer=self.announced, observe=self.observe)
        for order_id in expired:
            del self.states.data[order_id]
        self.observe.expired_orders.inc(len(expired))
        await self._answer()
        self.observe.watermark_lag.set((now - safe_time).total_seconds())
        self.observe.overdue_now.set(sum(1 for s in self.states.data.values() if counts_overdue(s)))

    async def _answer(self) -> None:
        while self._answered < len(self.announced.commands):
            state, command = self.announced.commands[self._answered]
            self._answered += 1
            for answer in self._answers(state, command):
                await self.apply(answer, "payments" if isinstance(answer, RefundSucceeded | RefundFailed) else "ledger")

    def _answers(self, state: OrderState, command: Command) -> list[Message]:
        order_id, user = state.order_id, state.user_id
        ledger = self.ledger(order_id)
        if ledger is Ledger.SILENT and command.kind in (CommandKind.RETRY_CREDIT, CommandKind.BLOCK_CREDIT):
            return []
        if command.kind is CommandKind.RETRY_CREDIT:
            if ledger is Ledger.CREDITS:
                return [
                    CreditPosted(
                        order_id=order_id,
                        user_id=user,
                        amount=state.amount,
                        currency=state.currency,
                        transaction_id=f"t-{order_id}",
                        credited_at=self.now,
                    )
                ]
            return [self._rejected(order_id, user, "wallet frozen", final=ledger is Ledger.REFUSES)]
        if command.kind is CommandKind.BLOCK_CREDIT:
            return [self._rejected(order_id, user, f"blocked: {command.reason}", final=True)]
        if command.kind is CommandKind.ISSUE_REFUND:
            if self.refunds(order_id):
                return [
                    RefundSucceeded(
                        order_id=order_id,
                        user_id=user,
                        amount=state.amount,
                        currency=state.currency,
                        refund_id=f"r-{order_id}",
                        refunded_at=self.now,
                    )
                ]
            return [RefundFailed(order_id=order_id, user_id=user, reason="provider refused", failed_at=self.now)]
        return []

    def _rejected(self, order_id: str, user: str, reason: str, *, final: bool) -> CreditRejected:
        return CreditRejected(order_id=order_id, user_id=user, reason=reason, final=final, rejected_at=self.now)
