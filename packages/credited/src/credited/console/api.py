"""A client of payments' support API (SUPPORT.md, issue 18) for the console and `credited order`.

Every call sends the caller's own key as `Authorization: Bearer`; the answers are passed on as the API gives
them (plain JSON), and a refusal becomes `ApiRefused` with the status, the error code and its detail, so the
pages and the terminal say plainly what was refused and why.
"""

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from credited.stack.ports import DEFAULT_PORTS

DEFAULT_PAYMENTS_URL = f"http://127.0.0.1:{DEFAULT_PORTS['payments']}"
ACTIONS = ("redrive_credit", "refund", "grant_compensation", "resend_notification")
CASE_ACTIONS = ("acknowledge", "assign", "notes", "resolve")
SEARCH_FILTERS = ("order_id", "user_id", "provider_txn_id")
ACT_SCOPE = "support:act"
Json = dict[str, Any]


def payments_url_from_environment() -> str:
    """CREDITED_PAYMENTS_URL, else the local stack's payments (`credited up`)."""
    return os.environ.get("CREDITED_PAYMENTS_URL") or DEFAULT_PAYMENTS_URL


@dataclass(frozen=True, slots=True)
class ApiRefused(Exception):
    """Payments answered with an error: its HTTP status, credited's error code and the detail for people."""

    status: int
    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ApiUnreachable(Exception):
    """Payments could not be reached at all (refused, timed out, name unknown)."""

    url: str
    reason: str

    def __str__(self) -> str:
        return f"payments at {self.url} cannot be reached: {self.reason}"


def refusal(response: httpx.Response) -> ApiRefused:
    """The refusal a non-2xx answer carries; a body that is not credited's shape is quoted, shortened."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        detail = body.get("detail")
        if isinstance(detail, list):  # a 422 names each field and its problem
            detail = "; ".join(
                f"{p.get('field')}: {p.get('problem')}" if isinstance(p, dict) else str(p) for p in detail
            )
        return ApiRefused(response.status_code, str(body["error"]), str(detail or ""))
    return ApiRefused(response.status_code, "http_error", response.text[:200] or response.reason_phrase)


def _segment(value: str) -> str:
    """`value` as one path segment: an id from the console's own URL may hold "#", "?" or "/" (percent-encoded there,
    decoded by the router), which written raw made another request of payments (ord_1# asked for ord_1)."""
    return quote(value, safe="")


class SupportApi:
    """Payments' support endpoints, called with one API key."""

    def __init__(self, base_url: str, key: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(15.0, connect=5.0),
            transport=transport,
        )

    async def __aenter__(self) -> "SupportApi":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Json:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, str(exc) or type(exc).__name__) from None
        if response.is_error:
            raise refusal(response)
        body = response.json()
        assert isinstance(body, dict)
        return body

    async def can_act(self) -> bool:
        """Whether the key holds support:act (`GET /v1/support/me`), so the pages offer to act only to a key that may.
        A payments without that route (404) leaves the question to payments itself, which refuses an act without it."""
        try:
            body = await self._call("GET", "/v1/support/me")
        except ApiRefused as exc:
            if exc.status == 404 and exc.code == "not_found":
                return True
            raise
        return ACT_SCOPE in body.get("scopes", [])

    async def search(self, by: str, value: str) -> list[Json]:
        """Orders by one of SEARCH_FILTERS, newest first."""
        body = await self._call("GET", "/v1/support/orders", params={by: value})
        return list(body.get("orders", []))

    async def order(self, order_id: str) -> Json:
        """The order, its timeline across the services, its cases and actions, and what was unavailable."""
        return await self._call("GET", f"/v1/support/orders/{_segment(order_id)}")

    async def act(
        self, order_id: str, action: str, reason: str, amount: int | None = None, idempotency_key: str | None = None
    ) -> Json:
        """Ask for one of ACTIONS on the order; the recorded action."""
        payload: Json = {"action": action, "reason": reason}
        if amount is not None:
            payload["amount"] = amount
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = await self._call(
            "POST", f"/v1/support/orders/{_segment(order_id)}/actions", json=payload, headers=headers
        )
        return dict(body.get("action", body))

    async def cases(self, state: str = "open") -> list[Json]:
        """Cases by severity, then age (oldest first)."""
        body = await self._call("GET", "/v1/support/cases", params={"state": state})
        return list(body.get("cases", []))

    async def case(self, case_id: str) -> Json:
        return await self._call("GET", f"/v1/support/cases/{_segment(case_id)}")

    async def case_action(self, case_id: str, action: str, text: str | None) -> Json:
        """acknowledge (an optional note), assign (the owner), notes (the note) or resolve (the resolution)."""
        field = {"acknowledge": "note", "assign": "owner", "notes": "note", "resolve": "resolution"}[action]
        return await self._call("POST", f"/v1/support/cases/{_segment(case_id)}/{action}", json={field: text or None})
