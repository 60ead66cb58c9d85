"""An order nobody can fix by machine reaches a person, end to end: on a real broker and PostgreSQL, with the
real Prometheus and Alertmanager from Debian's packages, the committed rules and Alertmanager routes.

The user has no wallet the ledger may credit (the ledger registers no user on their first credit here), so
the credit is refused for good; the provider declines every refund. The order ends in `needs_support` with
an open case, which pages; nobody acknowledges it, so it re-pages one severity higher; both pages reach the
test receiver. The platform then registers the user's wallet (users:write), and a support agent (a key with
support:read and support:act, nothing else) acknowledges the case and re-drives the credit through the
support API; a key with support:read only may not. The ledger credits the order once, the user is told once,
and the case closes by itself with the agent's action in its resolution and history.

Like the other alert end-to-end test it runs once in `make test`, on the test broker (not marked e2e).
"""

from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.identity import Scope
from tests.conftest import Broker
from tests.deploy_monitoring.alerting import RUNBOOK_BASE_URL, AlertWebhook, Notification, monitoring
from tests.e2e.stack import agent_key, paid_order, running_stack
from tests.kafka_reader import eventually

THRESHOLD_S = 3.0
REPAGE_AFTER_S = 75.0
"""Longer than SupportCaseOpen's `for: 1m`, so the page fires before the re-page replaces it."""
AMOUNT = 600
USER = "u-no-wallet"


def page(webhook: AlertWebhook, alertname: str) -> tuple[Notification, dict[str, Any]] | None:
    """The first firing notification of `alertname` and the alert in it."""
    note = webhook.first(alertname, "firing")
    if note is None:
        return None
    (alert,) = [a for a in note.body["alerts"] if a["labels"]["alertname"] == alertname and a["status"] == "firing"]
    return note, alert


@pytest.mark.long
async def test_an_order_no_machine_can_settle_opens_a_case_that_pages_re_pages_and_closes_when_support_credits_it(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    env = {
        "LEDGER_REGISTER_ON_FIRST_CREDIT": "false",
        "PAYMENTS_SIM_REFUND_FAILURE_SHARE": "1",
        "PAYMENTS_CASE_REPAGE_AFTER_S": str(REPAGE_AFTER_S),
    }
    webhook = AlertWebhook()
    async with running_stack(
        broker, database_url, isolation, tmp_path / "stack", threshold_s=THRESHOLD_S, extra_env=env
    ) as (stack, receiver):
        agent = await agent_key(stack, "agent-alice", {Scope.SUPPORT_READ, Scope.SUPPORT_ACT})
        reader = await agent_key(stack, "agent-bob", {Scope.SUPPORT_READ})
        payments, ledger = stack.url("payments"), stack.url("ledger")

        with webhook.serving(), monitoring(stack, tmp_path, webhook):
            async with httpx.AsyncClient(timeout=30, headers=stack.headers) as platform:
                order_id = await paid_order(platform, stack, USER, AMOUNT)

                def statuses() -> list[str]:
                    told = sorted(receiver.received.by_order().get(order_id, []), key=lambda p: p["sequence"])
                    return [p["status"] for p in told]

                async def open_cases() -> list[dict[str, Any]]:
                    answer = await platform.get(f"{payments}/v1/support/cases", headers=agent)
                    assert answer.status_code == 200, answer.text
                    return [c for c in answer.json()["cases"] if c["order_id"] == order_id]

                # Refused credit, declined refund: the order goes to a person, with one open case that pages.
                await eventually(lambda: statuses()[-1:] == ["needs_support"], timeout_s=120)
                await eventually(open_cases, timeout_s=60)
                [case] = await open_cases()
                assert (case["kind"], case["severity"], case["acknowledged_at"]) == ("needs_support", "page", None)
                await eventually(lambda: page(webhook, "SupportCaseOpen"), timeout_s=120, interval_s=0.5)
                opened = page(webhook, "SupportCaseOpen")
                assert opened is not None
                assert opened[0].path == "/alerts/page"
                assert opened[1]["annotations"]["runbook_url"].startswith(f"{RUNBOOK_BASE_URL}/d/runbook-")

                # Nobody acknowledges it: it re-pages one step higher, and that page is delivered too.
                await eventually(lambda: page(webhook, "SupportCaseUnacknowledged"), timeout_s=120, interval_s=0.5)
                repaged = page(webhook, "SupportCaseUnacknowledged")
                assert repaged is not None
                assert repaged[0].path.startswith("/alerts/")
                assert repaged[1]["labels"]["severity"] == "critical"
                [case] = await open_cases()
                assert case["severity"] == "critical" and case["repaged_at"] is not None

                # The agent acknowledges it; the platform registers the user's wallet; the agent re-drives the credit.
                acked = await platform.post(
                    f"{payments}/v1/support/cases/{case['id']}/acknowledge", json={"note": "on it"}, headers=agent
                )
                assert acked.status_code == 200, acked.text
                assert acked.json()["acknowledged_by"] == "agent-alice"
                registered = await platform.put(f"{ledger}/v1/users/{USER}", json={"currency": "CNY"})
                assert registered.status_code in (200, 201), registered.text
                redrive = {"action": "redrive_credit", "reason": "wallet registered after the user wrote in"}
                forbidden = await platform.post(
                    f"{payments}/v1/support/orders/{order_id}/actions", json=redrive, headers=reader
                )
                assert forbidden.status_code == 403, forbidden.text
                acted = await platform.post(
                    f"{payments}/v1/support/orders/{order_id}/actions",
                    json=redrive,
                    headers={**agent, "Idempotency-Key": f"redrive-{order_id}"},
                )
                assert acted.status_code == 202, acted.text
                assert acted.json()["action"]["by"] == "agent-alice"

                # Credited once, told once, and the case closes with the agent's action on record.
                await eventually(lambda: statuses()[-1:] == ["credited"], timeout_s=60)
                wallet = (await platform.get(f"{ledger}/v1/wallets/{USER}")).json()
                assert wallet["balances"] == {"CNY": AMOUNT}
                view = await platform.get(f"{payments}/v1/support/orders/{order_id}", headers=agent)
                assert view.status_code == 200, view.text

                async def resolved() -> dict[str, Any] | None:
                    answer = await platform.get(f"{payments}/v1/support/cases/{case['id']}", headers=agent)
                    closed: dict[str, Any] = answer.json()
                    return closed if closed["resolved_at"] else None

                await eventually(resolved, timeout_s=60)
                closed = await resolved()
                assert closed is not None
                assert "redrive_credit" in closed["resolution"] and "agent-alice" in closed["resolution"]
                history = [entry["action"] for entry in closed["history"]]
                assert history[0] == "opened" and history[-1] == "resolved"
                assert "repaged" in history and "acknowledged" in history
                [action] = view.json()["actions"]
                assert (action["action"], action["by"], action["reason"]) == (
                    "redrive_credit",
                    "agent-alice",
                    redrive["reason"],
                )
        assert statuses().count("credited") == 1
        assert receiver.received.duplicates == 0
