"""Why an order's status changed, as the platform backend is told it: a stable code, never the words behind it.
Pure: no I/O.

A status change's `reason` is written for the people who run credited: a refund a person asked carries their key's
name and their own note (payments' `support refund by <key>: <note>`, then the ledger's `blocked: ` and the
reconciler's `refunding: ` in front), a failed refund the provider's own answer. The webhook may be shown to the
user or logged by the platform's tools, so it carries only the code; the support views keep the full reason.
A reason this module does not recognise gives its status's generic code, never its text.
"""

from typing import Any

from contracts.commands import REVIEW_REJECTED_BLOCK, SUPPORT_REFUND_BLOCK
from contracts.events import OrderStatus

REFUNDING = "refunding: "
"""How the reconciler's remediating change after the ledger's final refusal starts (then the ledger's reason)."""
BLOCKED = "blocked: "
"""How the ledger's refusal of a blocked order's credit starts (then the block's reason)."""

_EXACT = {
    (OrderStatus.UNDER_REVIEW, "held for risk review"): "risk_review",
    (OrderStatus.DELAYED, "not credited in time; retrying"): "credit_overdue",
    (OrderStatus.DELAYED, "the review is taking longer than expected"): "review_overdue",
    (OrderStatus.REMEDIATING, "could not credit; preparing a refund"): "credit_retries_exhausted",
    (OrderStatus.NEEDS_SUPPORT, "credited while a refund was under way"): "credited_during_refund",
    (OrderStatus.CREDITED, "credit posted"): "credited",
    (OrderStatus.CREDITED, "credited after a delay"): "credited_late",
    (OrderStatus.COMPENSATED, "compensation for the delay"): "compensated",
    (OrderStatus.REFUNDED, "refunded to the original payment method"): "refunded",
}

_REFUSALS = (
    (BLOCKED + SUPPORT_REFUND_BLOCK, "support_refund"),
    (BLOCKED + REVIEW_REJECTED_BLOCK, "review_rejected"),
    (BLOCKED + "credit retries exhausted", "credit_retries_exhausted"),
    ("currency mismatch", "currency_mismatch"),
    ("wallet frozen", "wallet_frozen"),
)
"""The ledger's final refusals a refund follows, by how their reason starts."""

REASON_CODES = frozenset(
    {
        *_EXACT.values(),
        *(code for _, code in _REFUSALS),
        "credit_refused",
        "refund_failed",
        "payment_expired",
        *(status.value for status in OrderStatus),
    }
)
"""Every code the webhook's `reason` may carry (docs/contracts.md lists them)."""


def reason_code(status: OrderStatus, reason: str) -> str:
    """The stable code for why an order reached `status`, from its status change's internal `reason`."""
    if status is OrderStatus.EXPIRED:
        return "payment_expired"
    if status is OrderStatus.NEEDS_SUPPORT and reason.startswith("refund failed"):
        return "refund_failed"
    if status is OrderStatus.REMEDIATING and reason.startswith(REFUNDING):
        refused = reason.removeprefix(REFUNDING)
        return next((code for start, code in _REFUSALS if refused.startswith(start)), "credit_refused")
    return _EXACT.get((status, reason), status.value)


def for_platform(payload: dict[str, Any]) -> dict[str, Any]:
    """A stored notification as the platform backend receives it: its `reason` given as the stable code."""
    return {**payload, "reason": reason_code(OrderStatus(payload["status"]), str(payload.get("reason") or ""))}
