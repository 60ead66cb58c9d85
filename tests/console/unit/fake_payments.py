"""A fake of payments' support API (SUPPORT.md's shapes) for the console's rendering tests: it answers from
canned data, records each request it was sent, and refuses as payments would (401 for an unknown key, 403 for an
act from a key without support:act)."""

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

KEY = "sk_test_support"
ORDER = {
    "order_id": "ord_1",
    "user_id": "u-7",
    "amount": 64800,
    "currency": "CNY",
    "channel": "alipay",
    "provider": "alipay",
    "provider_txn_id": "tx-9",
    "payment_status": "succeeded",
    "status": "needs_support",
    "created_at": "2026-11-22T08:00:00+00:00",
    "paid_at": "2026-11-22T08:00:05+00:00",
    "open_cases": 1,
}


def case(case_id: str, severity: str, opened_at: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": case_id,
        "order_id": "ord_1",
        "user_id": "u-7",
        "kind": "needs_support",
        "severity": severity,
        "reason": "credit rejected and refund failed",
        "opened_at": opened_at,
        "owner": None,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "repaged_at": None,
        "resolved_at": None,
        "resolved_by": None,
        "resolution": None,
        "age_s": 3600,
        **extra,
    }


def entry(at: str, source: str, kind: str, summary: str) -> dict[str, Any]:
    return {"at": at, "source": source, "kind": kind, "summary": summary, "detail": {}}


@dataclass
class FakePayments:
    """Answers the support endpoints; `refuse` makes the next POST answer with that status and code."""

    requests: list[httpx.Request] = field(default_factory=list)
    refuse: tuple[int, str, str] | None = None
    scopes: tuple[str, ...] | None = ("support:read", "support:act")
    """The key's scopes, as `GET /v1/support/me` tells them; a POST without support:act is refused 403. None: a
    payments from before that route (404), which refuses nothing for it."""
    lose_answers: bool = False
    """Take each POST, then lose its answer (a read timeout): the act is done and the console cannot know it."""
    cases: list[dict[str, Any]] = field(
        default_factory=lambda: [
            case("c-warn", "warning", "2026-11-22T07:00:00+00:00"),
            case("c-crit-new", "critical", "2026-11-22T09:00:00+00:00"),
            case("c-crit-old", "critical", "2026-11-22T08:00:00+00:00"),
        ]
    )
    timeline: list[dict[str, Any]] = field(
        default_factory=lambda: [
            entry("2026-11-22T08:00:09+00:00", "reconciler", "escalated", "needs support"),
            entry("2026-11-22T08:00:00+00:00", "payments", "order_created", "order placed"),
            entry("2026-11-22T08:00:07+00:00", "ledger", "credit_rejected", "credit rejected"),
        ]
    )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.answer)

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return error(401, "unauthenticated", "the key is unknown")
        path = request.url.path
        if path == "/v1/support/me" and self.scopes is not None:
            return httpx.Response(200, json={"name": "support-alice", "scopes": list(self.scopes)})
        if request.method == "POST" and self.scopes is not None and "support:act" not in self.scopes:
            return error(403, "insufficient_scope", "this key lacks the scope support:act")
        if request.method == "POST" and self.refuse:
            return error(*self.refuse)
        if request.method == "POST" and self.lose_answers:
            raise httpx.ReadTimeout("the answer was lost", request=request)
        if path == "/v1/support/cases":
            return httpx.Response(200, json={"cases": self.cases})
        if path == "/v1/support/orders":
            found = [ORDER] if request.url.params.get("user_id") == "u-7" else []
            return httpx.Response(200, json={"orders": found})
        if path == "/v1/support/orders/ord_1":
            view = {
                "order": ORDER,
                "timeline": self.timeline,
                "cases": self.cases[:1],
                "actions": [],
                "unavailable": [],
            }
            return httpx.Response(200, json=view)
        if path == "/v1/support/orders/ord_1/actions":
            body = json.loads(request.content)
            action = {"id": "a-1", "order_id": "ord_1", "by": "support-alice", "at": ORDER["paid_at"], **body}
            return httpx.Response(202, json={"action": action})
        if path.startswith("/v1/support/cases/") and request.method == "POST":
            return httpx.Response(200, json=self.cases[0])
        if path.startswith("/v1/support/cases/"):
            history = [{"at": ORDER["paid_at"], "actor": "credited", "action": "opened", "detail": "<b>opened</b>"}]
            return httpx.Response(200, json={**self.cases[0], "history": history})
        return error(404, "not_found", f"no {path}")


def error(status: int, code: str, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "detail": detail})
