"""A hypothesis state machine of the ledger: every use case in any order, alone or many in one consumed batch
(duplicates inside a batch included), against a reference model.

The machine drives the real batch handler through a `Books` backend: the in-memory fake (fast, many examples) or
the real PostgreSQL adapter inside the consumer's batch transaction, where the invariants are SQL over the real
tables. After every step it checks: each transaction's entries sum to zero, every stored balance is the sum of its
entries, no wallet is negative, an order has at most one credit and one compensation, no blocked (refunded) order
is credited, no compensation without a credit, and the books, the rejections and the announcements (in their
order) match the model.
"""

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from contracts.base import Message
from contracts.codec import Envelope, deterministic_id, envelope_for
from contracts.commands import BlockCredit, GrantCompensation, RedriveCredit, RetryCredit
from contracts.events import CreditPosted, CreditRejected, PaymentSucceeded, RefundSucceeded
from ledger.handlers import UserPolicy

T = TypeVar("T")

USERS = ("u0", "u1", "u2")
CURRENCIES = ("CNY", "USD")
ORDERS = tuple(f"ord_{i}" for i in range(6))

Delivery = tuple[Message, Envelope]
Announced = tuple[str, object]
"""An announcement as the model predicts it: ("posted", amount) or ("rejected", final)."""


class Books(Protocol):
    """What the machine needs from a ledger backend."""

    async def consume(self, deliveries: Sequence[Delivery], users: UserPolicy) -> None:
        """Apply the deliveries as one consumed batch through the ledger's batch handler."""
        ...

    async def reset(self) -> None: ...

    async def freeze(self, user_id: str, currency: str) -> None: ...

    async def register(self, user_id: str, currency: str) -> None: ...

    async def violations(self) -> list[str]:
        """Every broken invariant of the stored books, described."""
        ...

    async def wallets(self) -> dict[str, int]:
        """Wallet account id -> balance, for wallets with a non-zero balance."""
        ...

    async def transactions(self) -> dict[tuple[str, str], int]:
        """(order id, kind) -> the amount the wallet got."""
        ...

    async def blocked(self) -> set[str]: ...

    async def take_published(self) -> list[Message]:
        """Events written since the last call, in order."""
        ...


@dataclass(frozen=True)
class Order:
    order_id: str
    user_id: str
    amount: int
    currency: str


@dataclass
class Model:
    """What the ledger must hold: the reference the stored books are compared with."""

    register_on_first_credit: bool
    users: dict[str, str] = field(default_factory=dict)
    frozen: set[tuple[str, str]] = field(default_factory=set)
    credits: dict[str, Order] = field(default_factory=dict)
    compensations: dict[str, int] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)
    refunded: set[str] = field(default_factory=set)
    """Blocked orders whose payment went back to the user: a person's re-drive never lifts their block."""
    processed: set[tuple[str, str]] = field(default_factory=set)
    paid: set[str] = field(default_factory=set)
    """Orders with a recorded payment fact: the only ones a retry may be sent for (others are dead-lettered)."""

    def first(self, consumer: str, event_id: str) -> bool:
        if (consumer, event_id) in self.processed:
            return False
        self.processed.add((consumer, event_id))
        return True

    def credit(self, order: Order, *, is_retry: bool) -> list[Announced]:
        """A credit attempt: what it announces."""
        if order.order_id in self.credits:  # a retry re-announces what was credited; a payment says nothing
            return [("posted", self.credits[order.order_id].amount)] if is_retry else []
        if order.order_id in self.blocked:
            return [("rejected", True)]
        if order.user_id not in self.users and self.register_on_first_credit:
            self.users[order.user_id] = order.currency
        if order.user_id not in self.users:
            return [("rejected", False)]
        if self.users[order.user_id] != order.currency or (order.user_id, order.currency) in self.frozen:
            self.blocked.add(order.order_id)
            return [("rejected", True)]
        self.credits[order.order_id] = order
        return [("posted", order.amount)]

    def redrive(self, order: Order) -> list[Announced]:
        """A person's re-drive: it lifts the block of an order not refunded, which stays lifted only if it credits."""
        held = order.order_id in self.blocked and order.order_id not in self.refunded
        if held:
            self.blocked.discard(order.order_id)
        announced = self.credit(order, is_retry=True)
        if held and order.order_id not in self.credits:
            self.blocked.add(order.order_id)
        return announced

    def block(self, order_id: str) -> list[Announced]:
        if order_id in self.credits:
            return [("posted", self.credits[order_id].amount)]
        self.blocked.add(order_id)
        return [("rejected", True)]

    def refund(self, order_id: str) -> list[Announced]:
        if order_id not in self.credits:
            self.blocked.add(order_id)
            self.refunded.add(order_id)
        return []

    def compensate(self, order_id: str, amount: int) -> list[Announced]:
        if order_id in self.credits and order_id not in self.compensations:
            self.compensations[order_id] = amount
        return []

    def wallets(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for order_id, order in self.credits.items():
            key = f"wallet:{order.user_id}:{order.currency}"
            out[key] = out.get(key, 0) + order.amount + self.compensations.get(order_id, 0)
        return {k: v for k, v in out.items() if v}


def _run(loop: asyncio.AbstractEventLoop, coro: Awaitable[T]) -> T:
    return loop.run_until_complete(coro)  # type: ignore[arg-type]


def _announced(published: list[Message]) -> list[Announced]:
    out: list[Announced] = []
    for message in published:
        assert isinstance(message, CreditPosted | CreditRejected), message
        out.append(("posted", message.amount) if isinstance(message, CreditPosted) else ("rejected", message.final))
    return out


orders = st.sampled_from(ORDERS)
steps = st.one_of(
    st.tuples(st.just("payment"), orders, st.integers(0, 1)),
    st.tuples(st.just("retry"), orders, st.integers(1, 3)),
    st.tuples(st.just("redrive"), orders, st.integers(1, 2)),
    st.tuples(st.just("block"), orders),
    st.tuples(st.just("refund"), orders),
    st.tuples(st.just("compensation"), orders, st.integers(1, 500), st.integers(0, 1)),
)
"""One message as (kind, order id, ...): few enough that a batch often holds the same event twice."""


class LedgerMachine(RuleBasedStateMachine):
    """Set `books` and `loop` on a subclass; run it with hypothesis' run_state_machine_as_test."""

    books: Books
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        self.model = Model(register_on_first_credit=True)
        self.orders: dict[str, Order] = {}
        self.users = UserPolicy()
        _run(self.loop, self.books.reset())

    # ---- setup -----------------------------------------------------------------------------------------

    @initialize(
        register=st.booleans(),
        orders=st.lists(
            st.tuples(st.sampled_from(USERS), st.integers(1, 10_000), st.sampled_from(CURRENCIES)),
            min_size=len(ORDERS),
            max_size=len(ORDERS),
        ),
    )
    def setup(self, register: bool, orders: list[tuple[str, int, str]]) -> None:
        self.model.register_on_first_credit = register
        self.users = UserPolicy(register_on_first_credit=register)
        for order_id, (user_id, amount, currency) in zip(ORDERS, orders, strict=True):
            self.orders[order_id] = Order(order_id, user_id, amount, currency)

    # ---- what arrives ----------------------------------------------------------------------------------

    def _delivery(self, step: tuple[Any, ...]) -> tuple[Delivery, list[Announced]] | None:
        """The message a step stands for, and what the model says applying it announces; None for a retry of an
        order with no payment recorded yet (the reconciler never sends one; its refusal is tested on its own), and
        for a compensation the ledger would refuse for good, to a frozen wallet (tested on its own too). A
        compensation is at most the order's amount, as the reconciler and support send them."""
        kind, order_id, *rest = step
        if kind in ("retry", "redrive") and order_id not in self.model.paid:
            return None
        order = self.orders[order_id]
        if kind == "compensation":
            rest[0] = min(rest[0], order.amount)
            credited = self.model.credits.get(order_id)
            owed = credited is not None and order_id not in self.model.compensations
            if owed and (credited.user_id, credited.currency) in self.model.frozen:
                return None
        now = datetime.now(UTC)
        message: Message
        if kind == "payment":
            message = PaymentSucceeded(
                order_id=order_id,
                user_id=order.user_id,
                amount=order.amount,
                currency=order.currency,
                channel="card",
                provider="sim",
                provider_txn_id=f"tx-{order_id}",
                paid_at=now,
            )
            # The same delivery again is a redelivery of one event; the other is the payment announced again.
            event_id, consumer = f"{order_id}-pay-{rest[0]}", "payments"
        elif kind == "retry":
            message = RetryCredit(
                order_id=order_id,
                user_id=order.user_id,
                amount=order.amount,
                currency=order.currency,
                attempt=rest[0],
                requested_at=now,
                provider_txn_id=f"tx-{order_id}",
            )
            event_id, consumer = deterministic_id("RetryCredit", order_id, str(rest[0])), "commands"
        elif kind == "redrive":
            message = RedriveCredit(
                order_id=order_id,
                user_id=order.user_id,
                amount=order.amount,
                currency=order.currency,
                attempt=1,
                requested_at=now,
                provider_txn_id=f"tx-{order_id}",
                requested_by="support-key",
            )
            event_id, consumer = deterministic_id("redrive", order_id, str(rest[0])), "commands"
        elif kind == "block":
            message = BlockCredit(
                order_id=order_id, user_id=order.user_id, reason="retries exhausted", requested_at=now
            )
            event_id, consumer = deterministic_id("BlockCredit", order_id), "commands"
        elif kind == "refund":
            message = RefundSucceeded(
                order_id=order_id,
                user_id=order.user_id,
                amount=order.amount,
                currency=order.currency,
                refund_id=f"rf-{order_id}",
                refunded_at=now,
            )
            event_id, consumer = deterministic_id("RefundSucceeded", order_id), "payments"
        else:
            amount, repeat = rest
            message = GrantCompensation(
                order_id=order_id, user_id=order.user_id, amount=amount, currency=order.currency, requested_at=now
            )
            event_id, consumer = deterministic_id("GrantCompensation", order_id, str(repeat)), "commands"
        delivery = (message, envelope_for(message, producer="test", event_id=event_id))
        if not self.model.first(consumer, event_id):
            return delivery, []
        if kind == "payment":
            self.model.paid.add(order_id)
        if kind == "redrive":
            return delivery, self.model.redrive(order)
        if kind in ("payment", "retry"):
            return delivery, self.model.credit(order, is_retry=kind == "retry")
        if kind == "block":
            return delivery, self.model.block(order_id)
        if kind == "refund":
            return delivery, self.model.refund(order_id)
        return delivery, self.model.compensate(order_id, rest[0])

    def _consume(self, batch: list[tuple[Any, ...]]) -> None:
        """The steps as one consumed batch: the model replays them in order, and the announcements, in their
        order, are what it predicts."""
        deliveries, expected = [], []
        for step in batch:
            made = self._delivery(step)
            if made is None:
                continue
            delivery, announced = made
            deliveries.append(delivery)
            expected += announced
        _run(self.loop, self.books.consume(deliveries, self.users))
        assert _announced(_run(self.loop, self.books.take_published())) == expected

    @rule(step=steps)
    def one_message_arrives(self, step: tuple[Any, ...]) -> None:
        self._consume([step])

    @rule(batch=st.lists(steps, min_size=2, max_size=10))
    def a_batch_arrives(self, batch: list[tuple[Any, ...]]) -> None:
        """Several messages in one poll, in one transaction, set-based: repeats of one event, several messages
        about one order, and events applied before, all mixed."""
        self._consume(batch)

    # ---- what operators do -----------------------------------------------------------------------------

    @rule(user_id=st.sampled_from(USERS), currency=st.sampled_from(CURRENCIES))
    def wallet_is_frozen(self, user_id: str, currency: str) -> None:
        _run(self.loop, self.books.freeze(user_id, currency))
        self.model.frozen.add((user_id, currency))

    @precondition(lambda self: not self.model.register_on_first_credit)
    @rule(user_id=st.sampled_from(USERS), currency=st.sampled_from(CURRENCIES))
    def user_is_registered(self, user_id: str, currency: str) -> None:
        _run(self.loop, self.books.register(user_id, currency))
        self.model.users.setdefault(user_id, currency)

    # ---- after every step ------------------------------------------------------------------------------

    @invariant()
    def the_books_balance_and_match_the_model(self) -> None:
        violations = _run(self.loop, self.books.violations())
        assert violations == [], violations
        assert _run(self.loop, self.books.wallets()) == self.model.wallets()
        stored = _run(self.loop, self.books.transactions())
        expected: dict[tuple[str, str], int] = {(o, "credit"): c.amount for o, c in self.model.credits.items()}
        expected |= {(o, "compensation"): amount for o, amount in self.model.compensations.items()}
        assert stored == expected
        blocked = _run(self.loop, self.books.blocked())
        assert blocked == self.model.blocked
        assert not blocked & set(self.model.credits)


def machine(books: Books, loop: asyncio.AbstractEventLoop) -> type[LedgerMachine]:
    """The machine class bound to one backend."""
    return type("BoundLedgerMachine", (LedgerMachine,), {"books": books, "loop": loop})


def snapshot_problems(rows: dict[str, list[Any]]) -> list[str]:
    """Name every non-empty result of the invariant queries."""
    return [f"{name}: {found}" for name, found in rows.items() if found]
