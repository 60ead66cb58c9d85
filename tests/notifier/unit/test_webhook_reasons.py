"""The webhook's `reason`: a stable code for why the order's status changed, never the internal words behind it."""

import json
import time

import pytest

from contracts.events import OrderStatus
from notifier.adapters.webhook import WebhookChannel
from notifier.domain import REASON_CODES, for_platform, reason_code
from notifier.ports import Target
from servicekit.signatures import verify
from tests.notifier.unit.test_channels import PAYLOAD, FakePoster

S = OrderStatus
STAFF_REFUND = "refunding: blocked: support refund by agent-7: Mrs Lin phoned twice, her son used the card"


@pytest.mark.parametrize(
    ("status", "reason", "code"),
    [
        (S.UNDER_REVIEW, "held for risk review", "risk_review"),
        (S.DELAYED, "not credited in time; retrying", "credit_overdue"),
        (S.DELAYED, "the review is taking longer than expected", "review_overdue"),
        (S.REMEDIATING, STAFF_REFUND, "support_refund"),
        (S.REMEDIATING, "refunding: blocked: risk review rejected: stolen card", "review_rejected"),
        (S.REMEDIATING, "refunding: blocked: credit retries exhausted", "credit_retries_exhausted"),
        (S.REMEDIATING, "could not credit; preparing a refund", "credit_retries_exhausted"),
        (S.REMEDIATING, "refunding: currency mismatch: the wallet is kept in JPY, not CNY", "currency_mismatch"),
        (S.REMEDIATING, "refunding: wallet frozen", "wallet_frozen"),
        (S.REMEDIATING, "refunding: blocked: chargeback opened by ops-3", "credit_refused"),
        (S.NEEDS_SUPPORT, "refund failed: ACQ.TRADE_HAS_CLOSE (trade closed, sub_msg ...)", "refund_failed"),
        (S.NEEDS_SUPPORT, "credited while a refund was under way", "credited_during_refund"),
        (S.CREDITED, "credit posted", "credited"),
        (S.CREDITED, "credited after a delay", "credited_late"),
        (S.COMPENSATED, "compensation for the delay", "compensated"),
        (S.REFUNDED, "refunded to the original payment method", "refunded"),
        (S.EXPIRED, "", "payment_expired"),
    ],
)
def test_each_reason_the_reconciler_writes_is_given_by_its_stable_code(status: S, reason: str, code: str) -> None:
    assert reason_code(status, reason) == code
    assert code in REASON_CODES


def test_a_reason_no_rule_knows_is_given_as_its_status_never_as_its_text() -> None:
    assert reason_code(S.DELAYED, "paused by ops-3: see ticket 4411") == "delayed"
    assert reason_code(S.NEEDS_SUPPORT, "") == "needs_support"


def test_the_platform_s_copy_replaces_only_the_reason_and_leaves_the_stored_payload_whole() -> None:
    stored = {**PAYLOAD, "status": "remediating", "reason": STAFF_REFUND}
    sent = for_platform(stored)
    assert sent == {**stored, "reason": "support_refund"}
    assert stored["reason"] == STAFF_REFUND


async def test_the_webhook_posts_the_reason_code_signed_over_the_body_it_sends() -> None:
    poster = FakePoster()
    channel = WebhookChannel("https://platform.example/hooks", "a-webhook-secret", poster)
    await channel.deliver({**PAYLOAD, "status": "remediating", "reason": STAFF_REFUND}, Target("webhook"))
    [sent] = poster.sent
    verify(sent.headers["x-signature"], sent.body, ["a-webhook-secret"], time.time())
    body = json.loads(sent.body)
    assert body["reason"] == "support_refund"
    assert "agent-7" not in sent.body.decode() and "Mrs Lin" not in sent.body.decode()
