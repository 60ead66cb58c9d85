"""KafkaAnnouncer: the round's status changes (for orders.status), commands (for ledger.commands and
payments.commands) and support cases (for support.cases), each with a deterministic event id so that a repeat
after a crash has no second effect: a status change's id names its sequence, a command's its attempt (and a re-send
of an unanswered BlockCredit or IssueRefund its number, so that it is not dropped as the first send's repeat), a
case's its kind (one case per order and kind).

`status`, `command` and `case` only queue; `records` builds the round's messages for the producer (rounds.py sends
them together and waits once for the broker). A message that cannot be built (it would break its contract)
becomes a dead letter instead, with the reason and the order: it must never stop the partition, and
building it again would fail the same way.
"""

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import orjson

from contracts.base import Message
from contracts.codec import Record, deterministic_id, encode, envelope_for
from contracts.commands import BlockCredit, GrantCompensation, IssueRefund, RetryCredit
from contracts.events import CaseRequested, OrderStatus, OrderStatusChanged
from reconciler.domain import CaseOpened, Command, CommandKind, OrderState, StatusChange
from servicekit.kafka import fitted
from servicekit.logs import about

log = logging.getLogger(__name__)

SERVICE = "reconciler"
Outgoing = tuple[str, Record]
Announcement = StatusChange | Command | CaseOpened
RESTATED = "restated: a status sent in a round the broker refused in part may have said otherwise"


def dead_letter(
    topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]], reason: str, **source: str
) -> Outgoing:
    """A record for the dead-letter topic: what could not be handled, why, and where it came from
    (servicekit's header names: dlq_reason, dlq_source_topic, ...). One too large for a produce request once its
    headers are added is trimmed as servicekit's letters are: refused for its size, it would undo every round that
    holds it, and its partition would stand still."""
    kept = [(k, v) for k, v in headers if not k.startswith("dlq_")]
    kept += [(f"dlq_{name}", v.encode()) for name, v in source.items()]
    kept += [("dlq_reason", reason.encode()), ("dlq_failed_at", datetime.now(UTC).isoformat().encode())]
    return topic, fitted(Record(key=key, value=value, headers=kept))


class KafkaAnnouncer:
    def __init__(self, topics: dict[str, str], dead_letters: str, unbuildable: Callable[[], None]) -> None:
        self._topics = topics  # "status", "ledger", "payments", "cases" -> qualified topic names
        self._dead_letters = dead_letters
        self._unbuildable_seen = unbuildable
        self._queued: list[tuple[OrderState, Announcement]] = []
        # The status changes `records` built last, by order: the order's partition, and the status under each sequence.
        self._built: dict[str, tuple[int, dict[int, OrderStatus]]] = {}
        self._shifts: dict[int, int] = {}  # how far the round moved each state object's changes (by its id)

    def status(self, state: OrderState, change: StatusChange) -> None:
        """Queue the change, numbered past what an undone round may have announced of its order (`state.landed`).

        A round done again announces again what it announced, under the same sequences and so the same event ids,
        which readers drop. But a record read before the timer fires again changes the order differently (a credit
        instead of the flag): its status, numbered again from the stored state, would reuse a sequence already
        announced for another status, and every reader would drop it (payments keeps only a higher one). So a
        change that differs from what may have landed under its sequence moves past the highest sequence that may
        have landed, and the state's sequence with it, here, as it is queued: every later change of the order (in
        this round too, from a copy of this state) is numbered from there. Once a change is numbered at or past
        that highest sequence, the state forgets what may have landed (written when the round is)."""
        # The changes of one result are numbered together, before any is queued: those after a moved one move with
        # it (the state, bumped once, numbers the later results of the order).
        shift = self._shifts.get(id(state), 0)
        if state.landed:
            statuses = dict(state.landed)
            sequence, top = change.sequence + shift, max(statuses)
            if sequence <= top and (shift or statuses.get(sequence) != change.status):
                state.sequence += top + 1 - sequence
                shift += top + 1 - sequence
                self._shifts[id(state)] = shift
            if change.sequence + shift >= top:
                state.landed = ()
        if shift:
            change = replace(change, sequence=change.sequence + shift)
        self._queued.append((state, change))

    def caught_up(self, state: OrderState) -> None:
        """At the end of a round, for an order the clock will change no more (settled, or a person's) that still
        has statuses an undone round may have left past its sequence: readers may hold any of those, and no later
        change of the order is coming to move them on (an undone tick flagged it or blocked it, then the credit
        read again repeated the statuses below). One that differs from the order's status is overtaken: the status
        is announced again past them. If none differs, the sequence moves up to them. Either way the state
        forgets them."""
        statuses = dict(state.landed)
        top = max(statuses)
        state.landed = ()
        if all(status == state.status for sequence, status in statuses.items() if sequence > state.sequence):
            state.sequence = max(state.sequence, top)
            return
        state.sequence = top + 1
        change = StatusChange(state.status, statuses[top], RESTATED, state.sequence)
        self._queued.append((state, change))

    def command(self, state: OrderState, command: Command) -> None:
        self._queued.append((state, command))

    def case(self, state: OrderState, case: CaseOpened) -> None:
        self._queued.append((state, case))

    def statuses(self) -> dict[str, tuple[int, dict[int, OrderStatus]]]:
        """The status changes `records` built last, by order, with its partition (the queue is not touched)."""
        return {order_id: (partition, dict(statuses)) for order_id, (partition, statuses) in self._built.items()}

    def sent(self) -> None:
        """The broker acknowledged every record `records` built last."""
        self._built = {}

    def undone(self) -> dict[str, tuple[int, dict[int, OrderStatus]]]:
        """The round is undone, and the queue dropped: the status changes `records` built last may be on the broker
        all the same (it refused another record of the round). Returned by order, with its partition, for the
        stored states to remember (rounds.py)."""
        built, self._built, self._queued, self._shifts = self._built, {}, [], {}
        return built

    def records(self) -> list[Outgoing]:
        """The queued announcements as records (the queue empties)."""
        queued, self._queued = self._queued, []
        self._built, self._shifts = {}, {}
        for state, announcement in queued:
            if isinstance(announcement, StatusChange):
                built = self._built.setdefault(state.order_id, (state.partition, {}))
                built[1][announcement.sequence] = announcement.status
        now = datetime.now(UTC)
        out = []
        for state, announcement in queued:
            try:
                out.append(self._record(state, announcement, now))
            except Exception as exc:  # noqa: BLE001 - whatever fails to build must not stop the partition
                out.append(self._unbuildable(state, announcement, exc))
        return out

    def _record(self, state: OrderState, announcement: Announcement, now: datetime) -> tuple[str, Record]:
        if isinstance(announcement, StatusChange):
            message: Message = self._status(state, announcement, now)
            key, topic = str(announcement.sequence), self._topics["status"]
            kind = "OrderStatusChanged"
        elif isinstance(announcement, CaseOpened):
            message = CaseRequested(
                order_id=state.order_id,
                user_id=state.user_id,
                kind=announcement.kind,
                severity=announcement.severity,
                reason=announcement.reason,
                requested_at=now,
            )
            key, topic, kind = announcement.kind.value, self._topics["cases"], "CaseRequested"
        else:
            message = self._command(state, announcement, now)
            key, kind = str(announcement.attempt), announcement.kind.value
            topic = self._topics["payments" if announcement.kind is CommandKind.ISSUE_REFUND else "ledger"]
            if announcement.resent:
                # A re-send's own id: under the first send's id the ledger or payments would drop it as a repeat
                # whenever the first one was applied and only its answer was lost, and never answer again.
                key = f"{key}~resent{announcement.resent}"
        event_id = deterministic_id(kind, state.order_id, key)
        return topic, encode(message, envelope_for(message, producer=SERVICE, event_id=event_id))

    @staticmethod
    def _status(state: OrderState, change: StatusChange, now: datetime) -> OrderStatusChanged:
        assert state.paid_at is not None
        return OrderStatusChanged(
            order_id=state.order_id,
            user_id=state.user_id,
            status=change.status,
            sequence=change.sequence,
            previous_status=change.previous,
            reason=change.reason,
            amount=state.amount,
            currency=state.currency,
            channel=state.channel or "unknown",
            paid_at=state.paid_at,
            credited_at=state.credited_at,
            estimated_credit_at=change.estimated_credit_at,
            changed_at=now,
        )

    def _command(self, state: OrderState, command: Command, now: datetime) -> Message:
        oid, uid, amount, currency = state.order_id, state.user_id, state.amount, state.currency
        if command.kind is CommandKind.RETRY_CREDIT:
            return RetryCredit(
                order_id=oid,
                user_id=uid,
                amount=amount,
                currency=currency,
                attempt=command.attempt,
                requested_at=now,
                provider_txn_id=state.provider_txn_id or None,
            )
        if command.kind is CommandKind.BLOCK_CREDIT:
            return BlockCredit(order_id=oid, user_id=uid, reason=command.reason, requested_at=now)
        if command.kind is CommandKind.ISSUE_REFUND:
            reason = command.reason or "not credited"
            return IssueRefund(
                order_id=oid, user_id=uid, amount=amount, currency=currency, reason=reason, requested_at=now
            )
        # The policy's amount for the order's currency, at most what the order paid (domain.compensate).
        return GrantCompensation(order_id=oid, user_id=uid, amount=command.amount, currency=currency, requested_at=now)

    def _unbuildable(self, state: OrderState, announcement: Announcement, exc: Exception) -> Outgoing:
        if isinstance(announcement, Command):
            what = announcement.kind.value
        elif isinstance(announcement, CaseOpened):
            what = f"case {announcement.kind.value}"
        else:
            what = f"status {announcement.status.value}"
        reason = f"unbuildable: {what} for order {state.order_id}: {exc!r}"[:1000]
        log.error("dead-lettering %s", reason, extra=about(state.order_id))
        self._unbuildable_seen()
        value = orjson.dumps({"order_state": state, "announcement": announcement})
        return dead_letter(
            self._dead_letters, state.order_id.encode(), value, [("dlq_producer", b"reconciler")], reason
        )
