"""Which topic carries which messages, who publishes them and which consumer groups read them.

This is the map a platform team needs to publish into credited or read from it; the AsyncAPI document
(`python -m contracts.asyncapi`) is generated from it and from the models.
"""

from dataclasses import dataclass

from contracts.base import Message
from contracts.commands import BlockCredit, GrantCompensation, IssueRefund, RedriveCredit, RetryCredit
from contracts.events import (
    CaseRequested,
    CreditPosted,
    CreditRejected,
    OrderExpired,
    OrderHeld,
    OrderPlaced,
    OrderReleased,
    OrderReviewRejected,
    OrderStatusChanged,
    PaymentFailed,
    PaymentSucceeded,
    RefundFailed,
    RefundSucceeded,
)
from contracts.topics import Topic


@dataclass(frozen=True, slots=True)
class Reader:
    """A consumer group of a credited service and the messages it acts on (it skips the others)."""

    service: str
    group: str
    messages: tuple[type[Message], ...]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: what it is for, the messages on it, who writes them and who reads them."""

    topic: Topic
    summary: str
    messages: tuple[type[Message], ...]
    producers: tuple[str, ...]
    readers: tuple[Reader, ...]


_PAYMENT_FACTS = (
    OrderPlaced,
    PaymentSucceeded,
    PaymentFailed,
    OrderHeld,
    OrderReleased,
    OrderReviewRejected,
    RefundSucceeded,
    RefundFailed,
    OrderExpired,
)

CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec(
        Topic.PAYMENTS_EVENTS,
        "What happened to an order's payment: placed, paid, failed, held for and released from risk review, refunded,"
        " expired unpaid.",
        _PAYMENT_FACTS,
        ("payments",),
        (
            Reader("ledger", "ledger.payments", (PaymentSucceeded, RefundSucceeded)),
            Reader("notifier", "notifier.payments", (OrderExpired,)),
            Reader(
                "reconciler",
                "credited-reconciler",
                tuple(m for m in _PAYMENT_FACTS if m not in (OrderPlaced, OrderExpired)),
            ),
        ),
    ),
    TopicSpec(
        Topic.LEDGER_EVENTS,
        "What the ledger did with an order: credited the wallet once, or refused to.",
        (CreditPosted, CreditRejected),
        ("ledger",),
        (Reader("reconciler", "credited-reconciler", (CreditPosted, CreditRejected)),),
    ),
    TopicSpec(
        Topic.LEDGER_COMMANDS,
        "Requests to the ledger: the reconciler's for an overdue order (retry the credit, block it, compensate), and"
        " a person's through payments' support API (block it before a refund, compensate).",
        (RetryCredit, BlockCredit, GrantCompensation),
        ("reconciler", "payments"),
        (Reader("ledger", "ledger.commands", (RetryCredit, BlockCredit, GrantCompensation)),),
    ),
    TopicSpec(
        Topic.LEDGER_REDRIVES,
        "A person's re-drive of an order's credit through payments' support API: the one request that may lift the"
        " ledger's block on an order, so only payments writes it.",
        (RedriveCredit,),
        ("payments",),
        (Reader("ledger", "ledger.commands", (RedriveCredit,)),),
    ),
    TopicSpec(
        Topic.PAYMENTS_COMMANDS,
        "Requests to payments to refund an order: the reconciler's for one the ledger blocked for good (a person's"
        " refund through payments' support API blocks it first, on ledger.commands).",
        (IssueRefund,),
        ("reconciler",),
        (Reader("payments", "payments.commands", (IssueRefund,)),),
    ),
    TopicSpec(
        Topic.ORDERS_STATUS,
        "Every change of an order's user-facing status, in order per order (`sequence`).",
        (OrderStatusChanged,),
        ("reconciler",),
        (
            Reader("notifier", "notifier.order-status", (OrderStatusChanged,)),
            Reader("payments", "payments.order-status", (OrderStatusChanged,)),
        ),
    ),
    TopicSpec(
        Topic.SUPPORT_CASES,
        "Orders a person has to own (remediation ran out, a review hold overdue, a credit with no payment): payments"
        " opens a support case for each.",
        (CaseRequested,),
        ("reconciler",),
        (Reader("payments", "payments.support-cases", (CaseRequested,)),),
    ),
)
"""Every topic that carries contract messages. The dead-letter topic (`Topic.DEAD_LETTER`) carries any
record that could not be decoded or handled, as it was, with `dlq_*` headers saying why (DEAD_LETTER_HEADERS)."""

DEAD_LETTER_HEADERS: dict[str, str] = {
    "dlq_reason": "Why the record could not be decoded or handled.",
    "dlq_source_topic": "The topic the record was read from (consumer dead letters).",
    "dlq_source_partition": "Its partition.",
    "dlq_source_offset": "Its offset.",
    "dlq_consumer_group": "The consumer group that gave up on it.",
    "dlq_source": "What gave up when it was not a consumer (`notifier.delivery`: a notification never delivered;"
    " `outbox relay`: an outbox row the broker refused for good, set aside in the outbox, the letter without its"
    " value).",
    "dlq_outbox_schema": "outbox relay only: the schema whose outbox holds the row.",
    "dlq_outbox_id": "outbox relay only: the row's id in that outbox.",
    "dlq_outbox_topic": "outbox relay only: the topic the row is for.",
    "dlq_channel": "notifier.delivery only: the delivery channel (webhook, webpush, fcm).",
    "dlq_target": "notifier.delivery only: the delivery target.",
    "dlq_notification_id": "notifier.delivery only: the notification.",
    "dlq_failed_at": "When it was given up on (ISO 8601, UTC).",
}
"""The headers a dead-lettered record carries besides its original ones."""


def topic_of(message: type[Message]) -> Topic:
    """The one topic that carries `message`."""
    for spec in CATALOG:
        if message in spec.messages:
            return spec.topic
    raise LookupError(f"no topic carries {message.__name__}")
