"""KafkaAnnouncer: status changes to orders.status and commands to the ledger and payments, through faust's
producer, each with a deterministic event id so a repeat after a crash has no second effect.

A send hands the record to the producer and returns; `acknowledged` waits for the broker to have every
record sent so far (batch.py waits for it before any state that records these announcements is
written).
"""

import asyncio
from datetime import UTC, datetime
from typing import Any

import faust

from contracts.base import Message
from contracts.codec import deterministic_id, encode, envelope_for
from contracts.commands import BlockCredit, GrantCompensation, IssueRefund, RetryCredit
from contracts.events import OrderStatusChanged
from reconciler.domain import Command, CommandKind, OrderState, StatusChange

SERVICE = "reconciler"


class KafkaAnnouncer:
    def __init__(
        self, status: faust.TopicT, ledger_commands: faust.TopicT, payments_commands: faust.TopicT, compensation: int
    ) -> None:
        self._status = status
        self._ledger = ledger_commands
        self._payments = payments_commands
        self._compensation = compensation
        self._unacknowledged: list[asyncio.Future[Any]] = []

    async def _send(self, topic: faust.TopicT, message: Message, event_id: str) -> None:
        record = encode(message, envelope_for(message, producer=SERVICE, event_id=event_id))
        self._unacknowledged.append(await topic.send(key=record.key, value=record.value, headers=record.headers))

    @property
    def unacknowledged(self) -> int:
        return len(self._unacknowledged)

    async def acknowledged(self) -> None:
        """Return once the broker has acknowledged every record sent so far; raise if it refused one."""
        sent, self._unacknowledged = self._unacknowledged, []
        if sent:
            await asyncio.gather(*sent)

    async def status(self, state: OrderState, change: StatusChange) -> None:
        assert state.paid_at is not None
        message = OrderStatusChanged(
            order_id=state.order_id,
            user_id=state.user_id,
            status=change.status,
            sequence=change.sequence,
            previous_status=change.previous,
            reason=change.reason[:200],
            amount=state.amount,
            currency=state.currency,
            channel=state.channel or "unknown",
            paid_at=state.paid_at,
            credited_at=state.credited_at,
            estimated_credit_at=change.estimated_credit_at,
            changed_at=datetime.now(UTC),
        )
        await self._send(
            self._status, message, deterministic_id("OrderStatusChanged", state.order_id, str(change.sequence))
        )

    async def command(self, state: OrderState, command: Command) -> None:
        now = datetime.now(UTC)
        oid, uid, amount, currency = state.order_id, state.user_id, state.amount, state.currency
        event_id = deterministic_id(command.kind.value, oid, str(command.attempt))
        message: Message
        topic = self._ledger
        if command.kind is CommandKind.RETRY_CREDIT:
            message = RetryCredit(
                order_id=oid, user_id=uid, amount=amount, currency=currency, attempt=command.attempt, requested_at=now
            )
        elif command.kind is CommandKind.BLOCK_CREDIT:
            message = BlockCredit(order_id=oid, user_id=uid, reason=command.reason, requested_at=now)
        elif command.kind is CommandKind.ISSUE_REFUND:
            topic = self._payments
            reason = (command.reason or "not credited")[:200]
            message = IssueRefund(
                order_id=oid, user_id=uid, amount=amount, currency=currency, reason=reason, requested_at=now
            )
        else:
            message = GrantCompensation(
                order_id=oid, user_id=uid, amount=self._compensation, currency=currency, requested_at=now
            )
        await self._send(topic, message, event_id)
