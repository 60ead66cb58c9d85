"""The ledger state machine (tests/ledger/stateful.py) on the in-memory fake: many short histories, fast."""

import asyncio
from collections.abc import Sequence

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from contracts.base import Message
from ledger.domain import AccountKind
from ledger.handlers import UserPolicy, handle_batch
from tests.ledger.fakes import Books, InMemoryLedger
from tests.ledger.stateful import Delivery, machine


class FakeBooks:
    def __init__(self) -> None:
        self.books = Books()
        self._seen = 0

    def uow(self) -> InMemoryLedger:
        return InMemoryLedger(self.books)

    async def reset(self) -> None:
        self.books, self._seen = Books(), 0

    async def consume(self, deliveries: Sequence[Delivery], users: UserPolicy) -> None:
        await handle_batch(deliveries, uow=self.uow, users=users)

    async def freeze(self, user_id: str, currency: str) -> None:
        self.books.frozen.add(f"wallet:{user_id}:{currency}")

    async def register(self, user_id: str, currency: str) -> None:
        self.books.users.setdefault(user_id, currency)

    async def violations(self) -> list[str]:
        problems = []
        sums: dict[str, int] = {}
        for (order_id, kind), posting in self.books.postings.items():
            if sum(e.amount for e in posting.entries) != 0:
                problems.append(f"{order_id} {kind} does not balance")
            for e in posting.entries:
                sums[e.account.account_id] = sums.get(e.account.account_id, 0) + e.amount
                if e.account.kind is AccountKind.WALLET and self.books.balances[e.account.account_id] < 0:
                    problems.append(f"{e.account.account_id} is negative")
        if sums != self.books.balances:
            problems.append(f"balances {self.books.balances} are not the sums of entries {sums}")
        problems += [
            f"{o} credited and blocked"
            for o, kind in self.books.postings
            if kind == "credit" and o in self.books.blocks
        ]
        return problems

    async def wallets(self) -> dict[str, int]:
        return {k: v for k, v in self.books.balances.items() if k.startswith("wallet:") and v}

    async def transactions(self) -> dict[tuple[str, str], int]:
        return {
            key: next(e.amount for e in p.entries if e.account.kind is AccountKind.WALLET)
            for key, p in self.books.postings.items()
        }

    async def blocked(self) -> set[str]:
        return set(self.books.blocks)

    async def take_published(self) -> list[Message]:
        new, self._seen = self.books.published[self._seen :], len(self.books.published)
        return new


def test_the_ledger_keeps_its_invariants_in_any_history_on_the_fake() -> None:
    loop = asyncio.new_event_loop()
    try:
        run_state_machine_as_test(
            machine(FakeBooks(), loop),
            settings=settings(
                max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
            ),
        )
    finally:
        loop.close()
