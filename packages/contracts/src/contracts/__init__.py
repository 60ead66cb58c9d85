"""The language between credited's services: events, commands, headers and topics."""

from contracts.codec import DecodeError, Envelope, decode, encode
from contracts.commands import BlockCredit, GrantCompensation, IssueRefund, RedriveCredit, RetryCredit
from contracts.events import (
    CreditPosted,
    CreditRejected,
    OrderExpired,
    OrderHeld,
    OrderPlaced,
    OrderReleased,
    OrderReviewRejected,
    OrderStatus,
    OrderStatusChanged,
    PaymentFailed,
    PaymentSucceeded,
    RefundFailed,
    RefundSucceeded,
)
from contracts.topics import Topic

__version__ = "0.1.0"

__all__ = [
    "BlockCredit",
    "CreditPosted",
    "CreditRejected",
    "DecodeError",
    "Envelope",
    "GrantCompensation",
    "IssueRefund",
    "OrderExpired",
    "OrderHeld",
    "OrderPlaced",
    "OrderReleased",
    "OrderReviewRejected",
    "OrderStatus",
    "OrderStatusChanged",
    "PaymentFailed",
    "PaymentSucceeded",
    "RedriveCredit",
    "RefundFailed",
    "RefundSucceeded",
    "RetryCredit",
    "Topic",
    "__version__",
    "decode",
    "encode",
]
