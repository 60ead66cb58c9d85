"""Which model decodes which event type, and the upcasters that lift old payloads to the current version."""

from collections.abc import Callable
from typing import Any

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

MODELS: dict[str, type[Message]] = {
    model.event_type: model
    for model in (
        OrderPlaced,
        PaymentSucceeded,
        PaymentFailed,
        OrderHeld,
        OrderReleased,
        OrderReviewRejected,
        OrderExpired,
        CreditPosted,
        CreditRejected,
        OrderStatusChanged,
        RefundSucceeded,
        RefundFailed,
        RetryCredit,
        RedriveCredit,
        BlockCredit,
        IssueRefund,
        GrantCompensation,
        CaseRequested,
    )
}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""(event_type, version) -> a function that turns a payload of that version into one of version + 1.

A breaking change to a model bumps its `schema_version` and registers the upcaster from the old
version here; the old sample payloads stay in tests/contracts so they keep decoding.
"""


def upcast(event_type: str, version: int, payload: dict[str, Any]) -> dict[str, Any]:
    """Lift `payload` from `version` to the model's current version, one step at a time."""
    target = MODELS[event_type].schema_version
    while version < target:
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise LookupError(f"no upcaster for {event_type} v{version}")
        payload = step(payload)
        version += 1
    return payload
