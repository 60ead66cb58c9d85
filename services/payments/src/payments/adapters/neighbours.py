"""What the other services know of an order, asked over HTTP with the caller's own Authorization (each service
checks the key itself; payments never lends its own): the ledger's entries, the reconciler's timeline, the
notifier's notifications; and the notifier's resend. A service that does not answer in time, or answers an
error, is named with why, so the support API answers what it has instead of failing."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from payments.support import Entry
from servicekit.money import in_major_units

DEFAULT_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A service the timeline lacks, and why."""

    source: str
    error: str


class NeighbourFailed(Exception):
    """A service did not answer usably: its name and why."""

    def __init__(self, source: str, error: str) -> None:
        super().__init__(f"{source}: {error}")
        self.unavailable = Unavailable(source, error)


def _at(value: str) -> datetime:
    """A neighbour's time; one without a zone is read as UTC, so the merged timeline can always sort it."""
    at = datetime.fromisoformat(value)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def ledger_entries(body: dict[str, Any]) -> list[Entry]:
    """GET /v1/orders/{id}/entries: one entry per ledger transaction (credit, compensation...)."""
    out = []
    for t in body.get("transactions", []):
        moved = sum(e["amount"] for e in t.get("entries", []) if e["amount"] > 0)
        detail = {"transaction_id": t["transaction_id"], "entries": t.get("entries", [])}
        amount = in_major_units(moved, t["currency"]) if t.get("currency") else str(moved)  # an older ledger: none
        out.append(Entry(_at(t["created_at"]), "ledger", str(t["kind"]), f"{t['kind']} of {amount}", detail))
    return out


def reconciler_entries(body: dict[str, Any]) -> list[Entry]:
    """GET /v1/orders/{id}/timeline: what the reconciler saw and decided, each with its time."""
    out = [Entry(_at(h["at"]), "reconciler", "reconciler", str(h["what"])) for h in body.get("timeline", [])]
    return out


def notifier_entries(body: dict[str, Any]) -> list[Entry]:
    """GET /v1/orders/{id}/notifications: one entry per notification, with how its deliveries went."""
    out = []
    for n in body.get("notifications", []):
        summary = f"told the user: {n.get('status')} ({n.get('delivery')})"
        detail = {k: n.get(k) for k in ("notification_id", "title", "body", "locale", "deliveries")}
        out.append(Entry(_at(n["changed_at"]), "notifier", "notification", summary, detail))
    return out


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    base_url: str | None
    path: str
    entries: Callable[[dict[str, Any]], list[Entry]]


class Neighbours:
    """The other services' HTTP APIs, each with a short timeout; one client for the service's life."""

    def __init__(
        self,
        *,
        ledger_url: str | None,
        reconciler_url: str | None,
        notifier_url: str | None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        # httpx's timeout is per connect, read and write: a neighbour trickling a byte a second never trips it. The
        # whole call gets its own deadline (asyncio.timeout), which is what "within timeout_s" means to support.
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._timeout_s = timeout_s
        self._notifier_url = notifier_url
        self._sources = (
            Source("ledger", ledger_url, "/v1/orders/{}/entries", ledger_entries),
            Source("reconciler", reconciler_url, "/v1/orders/{}/timeline", reconciler_entries),
            Source("notifier", notifier_url, "/v1/orders/{}/notifications", notifier_entries),
        )

    async def timeline(self, order_id: str, authorization: str) -> tuple[list[Entry], list[Unavailable]]:
        """Every service's entries of the order, asked at once, and the services that did not answer."""
        answers = await asyncio.gather(*(self._ask(s, order_id, authorization) for s in self._sources))
        entries: list[Entry] = []
        unavailable: list[Unavailable] = []
        for answer in answers:
            if isinstance(answer, Unavailable):
                unavailable.append(answer)
            else:
                entries += answer
        return entries, unavailable

    async def _ask(self, source: Source, order_id: str, authorization: str) -> list[Entry] | Unavailable:
        if source.base_url is None:
            return Unavailable(source.name, "not configured (PAYMENTS_" + source.name.upper() + "_URL)")
        url = source.base_url.rstrip("/") + source.path.format(order_id)
        try:
            async with asyncio.timeout(self._timeout_s):
                answer = await self._client.get(url, headers={"Authorization": authorization})
        except TimeoutError:
            return Unavailable(source.name, f"no whole answer within {self._timeout_s:g} s")
        except httpx.HTTPError as exc:
            return Unavailable(source.name, f"no answer: {exc!r}"[:300])
        if answer.status_code == 404 and source.name == "reconciler":
            return []  # settled longer ago than its retention, or never seen: nothing to add
        if answer.status_code != 200:
            return Unavailable(source.name, f"answered {answer.status_code}: {answer.text[:200]}")
        try:
            return source.entries(answer.json())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # AttributeError: not a JSON object
            return Unavailable(source.name, f"answered what payments cannot read: {exc!r}"[:300])

    async def resend(
        self, order_id: str, authorization: str, reason: str, idempotency_key: str | None = None
    ) -> httpx.Response:
        """Ask the notifier to send the order's latest notification again, under the act's Idempotency-Key (so two
        requests of one act, a retry or two at once, resend once); raise NeighbourFailed if it cannot be asked (not
        configured, no answer in time, a 5xx)."""
        if self._notifier_url is None:
            raise NeighbourFailed("notifier", "not configured (PAYMENTS_NOTIFIER_URL)")
        url = f"{self._notifier_url.rstrip('/')}/v1/orders/{order_id}/notifications/resend"
        try:
            headers = {"Authorization": authorization}
            if idempotency_key is not None:
                headers["Idempotency-Key"] = idempotency_key
            async with asyncio.timeout(self._timeout_s):
                answer = await self._client.post(url, headers=headers, json={"reason": reason})
        except TimeoutError:
            raise NeighbourFailed("notifier", f"no whole answer within {self._timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise NeighbourFailed("notifier", f"no answer: {exc!r}"[:300]) from exc
        if answer.status_code >= 500:
            raise NeighbourFailed("notifier", f"answered {answer.status_code}: {answer.text[:200]}")
        return answer

    async def close(self) -> None:
        await self._client.aclose()
