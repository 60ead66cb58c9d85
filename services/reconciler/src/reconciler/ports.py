"""What the reconciler's use cases need from the outside world."""

from collections.abc import Iterator
from typing import Protocol

from reconciler.domain import CaseOpened, Command, OrderState, StatusChange


class OrderStates(Protocol):
    """Per-order state, partitioned like the input topics (a faust table in production)."""

    def get(self, order_id: str) -> OrderState | None: ...

    def put(self, state: OrderState) -> None: ...

    def values(self) -> Iterator[OrderState]: ...


class Announcer(Protocol):
    """Status changes for orders.status, commands for the ledger and payments, and support cases for
    support.cases, queued for the round (see handlers.py): the adapter sends a round's announcements together
    and makes no state that records one durable before the broker has acknowledged them all."""

    def status(self, state: OrderState, change: StatusChange) -> None: ...

    def command(self, state: OrderState, command: Command) -> None: ...

    def case(self, state: OrderState, case: CaseOpened) -> None: ...


class Observations(Protocol):
    """What on-call engineers see: counts and latencies with bounded labels."""

    def event(self, kind: str) -> None: ...

    def paid(self, channel: str) -> None: ...

    def credited(self, channel: str, pay_to_credit_s: float) -> None: ...

    def flagged(self, channel: str, cause: str, detection_s: float) -> None: ...

    def remediation(self, action: str, outcome: str) -> None: ...

    def anomaly(self, kind: str) -> None: ...

    def escalation(self, reason: str) -> None: ...
