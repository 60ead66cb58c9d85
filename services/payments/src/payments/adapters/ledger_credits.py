"""LedgerCredits: the ledger's credits of a window, read page by page from its bulk read endpoint
(`GET /v1/audit/credits`) with an API key holding `audit:read`.

The ledger answers a window of MAX_WINDOW (servicekit.pages, 31 days) at most and refuses a longer one
(window_too_long), while an audit reads from a little before a window of up to 31 days to now: a longer read is
made in consecutive stretches of at most MAX_WINDOW, each [since, until) like the whole, so none is read twice."""

from datetime import datetime

import httpx

from payments.audit import Credit
from servicekit.pages import MAX_WINDOW

PAGE = 1000


class LedgerUnreadable(Exception):
    """The ledger did not answer a page of credits (it is away, or refused the key): the audit cannot judge."""


class LedgerCredits:
    """Reads the ledger over HTTP; one client, kept for the service's life."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0, page: int = PAGE) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s
        )
        self._page = page

    async def credits_between(self, since: datetime, until: datetime) -> list[Credit]:
        out: list[Credit] = []
        start = since
        while start < until:
            end = min(start + MAX_WINDOW, until)
            out += await self._stretch(start, end)
            start = end
        return out

    async def _stretch(self, since: datetime, until: datetime) -> list[Credit]:
        """The credits of a window the ledger answers (MAX_WINDOW at most), page by page."""
        params: dict[str, str | int] = {"since": since.isoformat(), "until": until.isoformat(), "limit": self._page}
        out: list[Credit] = []
        while True:
            try:
                answer = await self._client.get("/v1/audit/credits", params=params)
            except httpx.HTTPError as exc:
                raise LedgerUnreadable(f"the ledger did not answer: {exc!r}") from exc
            if answer.status_code != 200:
                raise LedgerUnreadable(f"the ledger answered {answer.status_code}: {answer.text[:300]}")
            body = answer.json()
            out += [
                Credit(c["order_id"], c["user_id"], c["amount"], c["currency"], c["transaction_id"])
                for c in body["credits"]
            ]
            if body["next"] is None:
                return out
            params["after"] = body["next"]

    async def close(self) -> None:
        await self._client.aclose()
