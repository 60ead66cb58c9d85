"""A hypothesis state machine of the ledger: every use case in any order against a reference model.

The machine drives the real handlers through a `Books` backend: the in-memory fake (fast, many examples) or
the real PostgreSQL adapter, where the invariants are SQL over the real tables. After every step it checks:
each transaction's entries sum to zero, every stored balance is the sum of its entries, no wallet is
negative, an order has at most one credit and one compensation, no blocked (refunded) order is credited,
no compensation without a credit, and the books, the rejections and the announcements match the model.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from contracts.base import Message
from contracts.codec import deterministic_id, envelope_for
from contracts.commands import BlockCredit, GrantCompensation, RetryCredit
from contracts.events import CreditPosted, CreditRejected, PaymentSucceeded, RefundSucceeded
from ledger import handlers
from ledger.handlers import FaultPolicy, UserPolicy
from ledger.ports import LedgerUnitOfWork

T = TypeVar("T")

USERS = ("u0", "u1", "u2")
CURRENCIES = ("CNY", "USD")
ORDERS = tuple(f"ord_{i}" for i in range(6))


class Books(Protocol):
    """What the machine needs from a ledger backend besides its unit of work."""

    def uow(self) -> LedgerUnitOfWork: ...

    async def reset(self) -> None: ...

    async def batch(self, steps: list[Callable[[], Awaitable[None]]]) -> None:
        """Run the steps as one consumed batch (one transaction on PostgreSQL)."""
        ...

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
    processed: set[tuple[str, str]] = field(default_factory=set)

    def first(self, consumer: str, event_id: str) -> bool:
        if (consumer, event_id) in self.processed:
            return False
        self.processed.add((consumer, event_id))
        return True

    def credit(self, order: Order) -> tuple[str, object]:
        """Apply a credit attempt for an order not credited yet: ('credited', None) or ('rejected', final)."""
        if order.order_id in self.blocked:
            return "rejected", True
        if order.user_id not in self.users and self.register_on_first_credit:
            self.users[order.user_id] = order.currency
        if order.user_id not in self.users:
            return "rejected", False
        if self.users[order.user_id] != order.currency or (order.user_id, order.currency) in self.frozen:
            self.blocked.add(order.order_id)
            return "rejected", True
        self.credits[order.order_id] = order
        return "credited", None

    def wallets(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for order_id, order in self.credits.items():
            key = f"wallet:{order.user_id}:{order.currency}"
            out[key] = out.get(key, 0) + order.amount + self.compensations.get(order_id, 0)
        return {k: v for k, v in out.items() if v}


def _run(loop: asyncio.AbstractEventLoop, coro: Awaitable[T]) -> T:
    return loop.run_until_complete(coro)  # type: ignore[arg-type]


class LedgerMachine(RuleBasedStateMachine):
    """Set `books` and `loop` on a subclass; run it with hypothesis' run_state_machine_as_test."""

    books: Books
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        self.model = Model(register_on_first_credit=True)
        self.orders: dict[str, Order] = {}
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

    def _call(self, step: Callable[[], Awaitable[None]]) -> list[Message]:
        _run(self.loop, step())
        return _run(self.loop, self.books.take_published())

    # ---- what arrives ----------------------------------------------------------------------------------

    def _payment(self, order: Order, delivery: int) -> Callable[[], Awaitable[None]]:
        event = PaymentSucceeded(
            order_id=order.order_id,
            user_id=order.user_id,
            amount=order.amount,
            currency=order.currency,
            channel="card",
            provider="sim",
            provider_txn_id=f"tx-{order.order_id}",
            paid_at=datetime.now(UTC),
        )
        # The same delivery again is a redelivery of one event; the other is the payment announced again.
        envelope = envelope_for(event, producer="payments", event_id=f"{order.order_id}-pay-{delivery}")
        return lambda: handlers.handle_payment_succeeded(
            event, envelope, uow=self.books.uow, faults=FaultPolicy(), users=self.users
        )

    def _retry(self, order: Order, attempt: int) -> Callable[[], Awaitable[None]]:
        command = RetryCredit(
            order_id=order.order_id,
            user_id=order.user_id,
            amount=order.amount,
            currency=order.currency,
            attempt=attempt,
            requested_at=datetime.now(UTC),
        )
        envelope = envelope_for(
            command, producer="reconciler", event_id=deterministic_id("RetryCredit", order.order_id, str(attempt))
        )
        return lambda: handlers.handle_retry_credit(command, envelope, uow=self.books.uow, users=self.users)

    def _expect_credit_attempt(self, order: Order, published: list[Message], *, is_retry: bool) -> None:
        if order.order_id in self.model.credits:
            credited = self.model.credits[order.order_id]
            if is_retry:  # re-announced with what was credited; nothing posted
                assert [type(m) for m in published] == [CreditPosted], published
                assert isinstance(published[0], CreditPosted) and published[0].amount == credited.amount
            else:
                assert published == []
            return
        outcome, final = self.model.credit(order)
        assert len(published) == 1, published
        if outcome == "credited":
            assert isinstance(published[0], CreditPosted) and published[0].amount == order.amount
        else:
            assert isinstance(published[0], CreditRejected) and published[0].final is final, published

    @rule(order_id=st.sampled_from(ORDERS), delivery=st.integers(0, 1))
    def payment_arrives(self, order_id: str, delivery: int) -> None:
        order = self.orders[order_id]
        published = self._call(self._payment(order, delivery))
        if not self.model.first("payments", f"{order_id}-pay-{delivery}"):
            assert published == []
            return
        self._expect_credit_attempt(order, published, is_retry=False)

    @rule(order_id=st.sampled_from(ORDERS), attempt=st.integers(1, 3))
    def retry_credit_arrives(self, order_id: str, attempt: int) -> None:
        order = self.orders[order_id]
        published = self._call(self._retry(order, attempt))
        if not self.model.first("commands", f"retry-{order_id}-{attempt}"):
            assert published == []
            return
        self._expect_credit_attempt(order, published, is_retry=True)

    @rule(order_id=st.sampled_from(ORDERS), attempt=st.integers(1, 3))
    def payment_and_retry_arrive_in_one_batch(self, order_id: str, attempt: int) -> None:
        """The payment event and a retry in one consumed batch (one transaction with savepoints)."""
        order = self.orders[order_id]
        _run(self.loop, self.books.batch([self._payment(order, 0), self._retry(order, attempt)]))
        published = _run(self.loop, self.books.take_published())
        expected_payment = self.model.first("payments", f"{order_id}-pay-0")
        expected_retry = self.model.first("commands", f"retry-{order_id}-{attempt}")
        # Replay the model in the same order, splitting what was published between the two messages.
        if expected_payment:
            head = 1 if order_id not in self.model.credits else 0
            self._expect_credit_attempt(order, published[:head], is_retry=False)
            published = published[head:]
        if expected_retry:
            self._expect_credit_attempt(order, published, is_retry=True)
        else:
            assert published == []

    @rule(order_id=st.sampled_from(ORDERS))
    def block_credit_arrives(self, order_id: str) -> None:
        order = self.orders[order_id]
        command = BlockCredit(
            order_id=order_id, user_id=order.user_id, reason="retries exhausted", requested_at=datetime.now(UTC)
        )
        envelope = envelope_for(command, producer="reconciler", event_id=deterministic_id("BlockCredit", order_id))
        published = self._call(lambda: handlers.handle_block_credit(command, envelope, uow=self.books.uow))
        if not self.model.first("commands", f"block-{order_id}"):
            assert published == []
        elif order_id in self.model.credits:
            assert [type(m) for m in published] == [CreditPosted]
        else:
            self.model.blocked.add(order_id)
            assert len(published) == 1 and isinstance(published[0], CreditRejected) and published[0].final

    @rule(order_id=st.sampled_from(ORDERS))
    def refund_succeeded_arrives(self, order_id: str) -> None:
        order = self.orders[order_id]
        event = RefundSucceeded(
            order_id=order_id,
            user_id=order.user_id,
            amount=order.amount,
            currency=order.currency,
            refund_id=f"rf-{order_id}",
            refunded_at=datetime.now(UTC),
        )
        envelope = envelope_for(event, producer="payments", event_id=deterministic_id("RefundSucceeded", order_id))
        assert self._call(lambda: handlers.handle_refund_succeeded(event, envelope, uow=self.books.uow)) == []
        if self.model.first("payments", f"refund-{order_id}") and order_id not in self.model.credits:
            self.model.blocked.add(order_id)

    @rule(order_id=st.sampled_from(ORDERS), amount=st.integers(1, 500), repeat=st.integers(0, 1))
    def grant_compensation_arrives(self, order_id: str, amount: int, repeat: int) -> None:
        order = self.orders[order_id]
        command = GrantCompensation(
            order_id=order_id,
            user_id=order.user_id,
            amount=amount,
            currency=order.currency,
            requested_at=datetime.now(UTC),
        )
        event_id = deterministic_id("GrantCompensation", order_id, str(repeat))
        envelope = envelope_for(command, producer="reconciler", event_id=event_id)
        assert self._call(lambda: handlers.handle_grant_compensation(command, envelope, uow=self.books.uow)) == []
        first = self.model.first("commands", event_id)
        if first and order_id in self.model.credits and order_id not in self.model.compensations:
            self.model.compensations[order_id] = amount

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
