"""Support for orders: what a person may do to an order (and why not), the command each act sends, and one
timeline of the order across the services, in time order.

An act goes through idempotent commands like the reconciler's, so the services that execute them keep their own
checks (the ledger credits only what the recorded payment stands behind, payments refunds only a paid order once);
the refusals here answer a person at once, with a code, instead of a dead letter later. A re-drive is the one act
with a command of its own, RedriveCredit on ledger.redrives: only payments writes that topic, and the ledger lifts
its block on an order for nothing else.

A refund takes the reconciler's path, never a shortcut: the act sends BlockCredit to the ledger, not IssueRefund.
Payments' copy of the order's status (`credited`) lags the ledger, so a credit could land between the refusal's check
and the refund and the user be paid twice. Under the order's lock the ledger either re-announces a credit it posted
(the reconciler closes the order credited; nothing is refunded) or blocks the order for good and answers
CreditRejected(final=True), on which the reconciler sends IssueRefund for a paid order awaiting its credit
(awaiting_credit, retrying, blocking) and payments refunds it. An order escalated to a person (needs_support) is no
such order: its refund failed (refused here, `refund_failed`) or it was refunded and credited (`already_refunded`).
An order held for risk review is refused (`under_review`): the review's rejection blocks and refunds it.
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from contracts.base import Message, clip
from contracts.codec import deterministic_id
from contracts.commands import SUPPORT_REFUND_BLOCK, BlockCredit, GrantCompensation, RedriveCredit
from contracts.topics import Topic
from payments.domain import REFUNDS_IN_FLIGHT, Order, PaymentStatus

SETTLED_CREDITED = frozenset({"credited", "compensated"})
REMEDIATING = "remediating"
"""The status the reconciler gives an order it blocks to refund, and while it refunds it."""
MAX_RETRY_ATTEMPT = 100
BLOCK_REASON_LIMIT = 160
"""The longest BlockCredit reason sent: the ledger answers "blocked: <reason>" in a CreditRejected field of 200."""
REQUESTED = "requested"
REFUND_AWAITS_BLOCK = "awaiting_ledger_block"
"""A refund's outcome when asked: the ledger blocks the order first; the reconciler refunds only after that."""


class SupportAction(StrEnum):
    """What a person with support:act may do to an order."""

    REDRIVE_CREDIT = "redrive_credit"
    REFUND = "refund"
    GRANT_COMPENSATION = "grant_compensation"
    RESEND_NOTIFICATION = "resend_notification"


@dataclass(frozen=True, slots=True)
class Refused:
    """Why an act is refused: a stable code and a sentence for people."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What payments knows of an order that decides whether an act applies: the order, its refund's state at
    the provider (requested, pending, succeeded, failed) if one was tried, and how many refunds, re-drives and
    compensations people asked before."""

    order: Order
    refund_status: str | None = None
    refunds_requested: int = 0
    redrives_requested: int = 0
    compensations_requested: int = 0


def refusal(action: SupportAction, facts: OrderFacts, amount: int | None = None) -> Refused | None:
    """Why `action` cannot apply to the order now, if it cannot."""
    order = facts.order
    if action is SupportAction.RESEND_NOTIFICATION:
        return None  # the notifier knows what it sent; it answers for itself
    if order.payment_status is not PaymentStatus.SUCCEEDED or order.provider_txn_id is None:
        return Refused("not_paid", f"order {order.order_id} is not paid (payment {order.payment_status.value})")
    if facts.refund_status == "succeeded" or order.status == "refunded":
        return Refused("already_refunded", f"order {order.order_id} was refunded")
    if action is SupportAction.REFUND:
        return _refund_refusal(facts)
    if action is SupportAction.REDRIVE_CREDIT:
        return _redrive_refusal(facts)
    return _compensation_refusal(facts, amount)


def _at_the_provider(facts: OrderFacts) -> Refused | None:
    """A refund of the order is at the provider, its outcome not told yet (payments.refunds keeps asking): a credit
    or a second refund beside it would pay the user twice if it ends refunded."""
    if facts.refund_status in REFUNDS_IN_FLIGHT:
        order_id = facts.order.order_id
        return Refused("refund_in_flight", f"the refund of order {order_id} is {facts.refund_status} at the provider")
    return None


def _refund_refusal(facts: OrderFacts) -> Refused | None:
    order = facts.order
    if facts.refund_status == "failed":
        return Refused("refund_failed", f"the refund of order {order.order_id} failed at the provider: ask finance")
    if (in_flight := _at_the_provider(facts)) is not None:
        return in_flight
    if facts.refunds_requested:
        return Refused("refund_in_flight", f"a refund of order {order.order_id} is asked already, not answered yet")
    if order.status in SETTLED_CREDITED:
        return Refused("already_credited", f"order {order.order_id} is credited: a refund would pay it twice")
    if order.review_status == "held":
        return Refused("under_review", f"order {order.order_id} is held for risk review: reject it there to refund")
    if order.review_status == "rejected":
        # The rejection blocked the credit and the reconciler refunds it: a second block would be recorded as a refund
        # "awaiting the ledger's block" that nothing ever answers.
        return Refused(
            "review_rejected", f"order {order.order_id} was rejected in risk review: its refund is under way"
        )
    if order.status == REMEDIATING:
        return Refused("refund_in_flight", f"the reconciler is refunding order {order.order_id}: wait for it to end")
    return None


def _redrive_refusal(facts: OrderFacts) -> Refused | None:
    order = facts.order
    if (in_flight := _at_the_provider(facts)) is not None:
        return in_flight
    if facts.refunds_requested:
        return Refused("refund_in_flight", f"a refund of order {order.order_id} is asked already, not answered yet")
    if order.status in SETTLED_CREDITED:
        return Refused("already_credited", f"order {order.order_id} is credited already")
    if order.status == REMEDIATING:
        # The reconciler is blocking the order to refund it, or refunding it: a re-drive would lift that block, and
        # a credit beside a refund pays the user twice. It ends refunded, or in needs_support if the refund fails.
        return Refused("refund_in_flight", f"the reconciler is refunding order {order.order_id}: wait for it to end")
    if order.review_status == "held":
        return Refused("under_review", f"order {order.order_id} is held for risk review: release it first")
    if order.review_status == "rejected":
        return Refused("review_rejected", f"order {order.order_id} was rejected in risk review")
    return None


def _compensation_refusal(facts: OrderFacts, amount: int | None) -> Refused | None:
    order = facts.order
    if amount is None:
        return Refused("amount_required", "grant_compensation needs `amount` (minor units)")
    if amount > order.amount:
        return Refused("compensation_above_amount", f"a compensation is at most the order's {order.amount}")
    if order.status == "compensated":
        return Refused("already_compensated", f"order {order.order_id} was compensated already")
    if facts.compensations_requested:
        # The ledger pays one compensation per order: a second act would be answered 202 and move nothing. One the
        # ledger refused (a frozen wallet) is in the dead letters, to replay when the cause is fixed.
        return Refused(
            "compensation_asked",
            f"a compensation of order {order.order_id} was asked already: the ledger pays one per order",
        )
    if order.status != "credited":
        return Refused("not_credited", f"order {order.order_id} is not credited: only a credited order earns one")
    return None


def outcome(action: SupportAction) -> str:
    """What an act's row says when it is asked: a refund waits for the ledger's block, the others are requested."""
    return REFUND_AWAITS_BLOCK if action is SupportAction.REFUND else REQUESTED


def command_event_id(order_id: str, action: SupportAction, token: str) -> str:
    """The event id of an act's command: the same for the same order, act and token (the Idempotency-Key, or
    the act's own row id when none was given)."""
    return deterministic_id("SupportAction", order_id, action.value, token)


def act_fingerprint(order_id: str, action: SupportAction, reason: str, amount: int | None) -> str:
    """Identifies an act's request (its order and body), so an Idempotency-Key reused with another is caught."""
    text = json.dumps([order_id, action.value, reason, amount])  # a reason may hold any character but NUL
    return hashlib.sha256(text.encode()).hexdigest()


class Publisher(Protocol):
    """Where an act's command goes: the unit of work's outbox, written with the act's row."""

    def publish(self, topic: Topic, message: Message, *, event_id: str | None = None) -> None: ...


def send_command(
    unit: Publisher, act: SupportAction, facts: OrderFacts, *, by: str, reason: str, amount: int | None, now: datetime,
    event_id: str,
) -> bool:  # fmt: skip
    """Publish the command of an act through `unit` (re-drive: RedriveCredit on the payment's facts, naming who asked;
    refund: BlockCredit, the refund following the ledger's final rejection; compensation: GrantCompensation); False
    for an act that sends none (resend)."""
    order = facts.order
    if act is SupportAction.REDRIVE_CREDIT:
        assert order.provider_txn_id is not None  # refusal() let no re-drive of an unpaid order through
        # On the topic only payments writes: the ledger lifts a block for a re-drive from there alone.
        unit.publish(
            Topic.LEDGER_REDRIVES,
            RedriveCredit(
                order_id=order.order_id,
                user_id=order.user_id,
                amount=order.amount,
                currency=order.currency,
                attempt=min(facts.redrives_requested + 1, MAX_RETRY_ATTEMPT),
                requested_at=now,
                provider_txn_id=order.provider_txn_id,
                requested_by=by[:200],
            ),
            event_id=event_id,
        )
    elif act is SupportAction.REFUND:
        unit.publish(
            Topic.LEDGER_COMMANDS,
            BlockCredit(
                order_id=order.order_id,
                user_id=order.user_id,
                reason=clip(f"{SUPPORT_REFUND_BLOCK}{by}: {reason}", BLOCK_REASON_LIMIT),
                requested_at=now,
            ),
            event_id=event_id,
        )
    elif act is SupportAction.GRANT_COMPENSATION:
        assert amount is not None  # refusal() let no compensation without an amount through
        unit.publish(
            Topic.LEDGER_COMMANDS,
            GrantCompensation(
                order_id=order.order_id, user_id=order.user_id, amount=amount, currency=order.currency, requested_at=now
            ),
            event_id=event_id,
        )
    else:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing that happened to an order, as one service saw it."""

    at: datetime
    source: str
    kind: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)


SOURCES = ("payments", "ledger", "reconciler", "notifier", "support")


def merged(*groups: Iterable[Entry]) -> list[Entry]:
    """Every entry of every service in time order; at the same instant, in the order the money moves (payments
    before the ledger, before the reconciler, the notifier, then what people did)."""
    return sorted((e for g in groups for e in g), key=lambda e: (e.at, SOURCES.index(e.source), e.kind))
