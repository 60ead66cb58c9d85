"""The language between credited's services: events, commands, headers and topics."""

from contracts.codec import DecodeError, Envelope, decode, encode
from contracts.commands import GrantCompensation, IssueRefund, RetryCredit
from contracts.events import (
    CreditPosted,
    CreditRejected,
    OrderPlaced,
    OrderStatus,
    OrderStatusChanged,
    PaymentFailed,
    PaymentSucceeded,
)
from contracts.topics import Topic

__all__ = [
    "CreditPosted",
    "CreditRejected",
    "DecodeError",
    "Envelope",
    "GrantCompensation",
    "IssueRefund",
    "OrderPlaced",
    "OrderStatus",
    "OrderStatusChanged",
    "PaymentFailed",
    "PaymentSucceeded",
    "RetryCredit",
    "Topic",
    "decode",
    "encode",
]
