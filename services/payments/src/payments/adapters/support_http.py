"""Payments' support API for orders: find an order by its id, its user or its provider transaction (support:read),
see it on one timeline across the services with its cases and the acts on it (support:read), and act on it
(support:act): re-drive the credit, refund, grant compensation, resend the notification. A support key may ask
for its own name and scopes (support:read), so a client such as the console offers to act only to a key that can."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
import httpx
from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from contracts.base import MinorUnits, OrderId
from payments.adapters.neighbours import NeighbourFailed, Neighbours
from payments.adapters.support_books import (
    Act,
    ActionRecord,
    ActRefused,
    IdempotencyKeyReused,
    PostgresSupportBooks,
    SearchKey,
    UnknownOrder,
)
from payments.support import Entry, SupportAction, merged
from servicekit.http import STORABLE_TEXT, ApiError, JsonResponse, error_responses
from servicekit.identity import Caller, Scope, requires

SupportRead = Annotated[Caller, Depends(requires(Scope.SUPPORT_READ))]
SupportAct = Annotated[Caller, Depends(requires(Scope.SUPPORT_ACT))]
FILTERS: tuple[SearchKey, ...] = ("order_id", "user_id", "provider_txn_id")
SearchValue = Annotated[str | None, Query(min_length=1, max_length=128, pattern=STORABLE_TEXT)]


class OrderSummary(BaseModel):
    order_id: str
    user_id: str
    amount: int
    currency: str
    channel: str
    provider: str | None
    provider_txn_id: str | None
    payment_status: str
    status: str
    created_at: str
    paid_at: str | None
    open_cases: int


class OrdersFound(BaseModel):
    orders: list[OrderSummary] = Field(description="Newest first, at most 100.")


class EntryView(BaseModel):
    at: str
    source: Literal["payments", "ledger", "reconciler", "notifier", "support"]
    kind: str
    summary: str
    detail: dict[str, Any]


class ActionView(BaseModel):
    id: int
    order_id: str
    action: str
    reason: str
    by: str = Field(description="The name of the API key that acted.")
    at: str
    command_event_id: str | None
    outcome: str


class UnavailableView(BaseModel):
    source: str
    error: str


class SupportOrderView(BaseModel):
    """The order, everything that happened to it in time order across the services, its cases and the acts on it;
    `unavailable` names a service that did not answer (its part is missing, the rest is there)."""

    order: OrderSummary
    timeline: list[EntryView]
    cases: list[dict[str, Any]]
    actions: list[ActionView]
    unavailable: list[UnavailableView]


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: SupportAction
    reason: str = Field(min_length=1, max_length=200, pattern=STORABLE_TEXT)
    amount: MinorUnits | None = Field(None, description="grant_compensation only: minor units of the order's currency")


class ActionAnswer(BaseModel):
    action: ActionView


class KeyView(BaseModel):
    """The calling key as payments knows it: the name its acts are recorded under, and its scopes."""

    name: str
    scopes: list[str] = Field(description="Sorted scope names, e.g. support:read, support:act.")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def summary_of(row: asyncpg.Record) -> OrderSummary:
    return OrderSummary(
        **{k: row[k] for k in ("order_id", "user_id", "amount", "currency", "channel", "provider", "provider_txn_id")},
        payment_status=row["payment_status"],
        status=row["status"],
        created_at=row["created_at"].isoformat(),
        paid_at=_iso(row["paid_at"]),
        open_cases=row["open_cases"],
    )


def case_of(row: asyncpg.Record) -> dict[str, Any]:
    case = {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in row.items()}
    case["age_s"] = round(float(row["age_s"]), 3)
    return case


def action_view(a: ActionRecord) -> ActionView:
    return ActionView(
        id=a.id, order_id=a.order_id, action=a.action, reason=a.reason, by=a.by, at=a.at.isoformat(),
        command_event_id=a.command_event_id, outcome=a.outcome,
    )  # fmt: skip


def entry_view(e: Entry) -> EntryView:
    return EntryView(at=e.at.isoformat(), source=e.source, kind=e.kind, summary=e.summary, detail=e.detail)  # type: ignore[arg-type]


def key_routes() -> APIRouter:
    router = APIRouter(prefix="/v1/support", tags=["support"])

    @router.get("/me", response_model=KeyView)
    async def me(caller: SupportRead) -> KeyView:
        """The calling key's name and scopes: whether it may act (support:act) or only read."""
        return KeyView(name=caller.name, scopes=sorted(s.value for s in caller.scopes))

    return router


def support_routes(books: PostgresSupportBooks, neighbours: Neighbours) -> APIRouter:
    router = APIRouter(prefix="/v1/support/orders", tags=["support"])

    @router.get("", response_model=OrdersFound, responses=error_responses(400, 422))
    async def search(
        _: SupportRead, order_id: SearchValue = None, user_id: SearchValue = None, provider_txn_id: SearchValue = None
    ) -> OrdersFound:
        """Orders by exactly one of order_id, user_id, provider_txn_id, newest first (at most 100)."""
        given = {k: v for k, v in zip(FILTERS, (order_id, user_id, provider_txn_id), strict=True) if v is not None}
        if len(given) != 1:
            raise ApiError(400, "one_filter", f"give exactly one of {', '.join(FILTERS)} (given: {len(given)})")
        [(key, value)] = given.items()
        return OrdersFound(orders=[summary_of(r) for r in await books.search(key, value)])

    @router.get("/{order_id}", response_model=SupportOrderView, responses=error_responses(404, 422))
    async def order(order_id: OrderId, request: Request, _: SupportRead) -> SupportOrderView:
        """The order on one timeline across payments, the ledger, the reconciler and the notifier (each asked
        with the caller's key), its cases and the acts on it."""
        found = await books.search("order_id", order_id)
        if not found:
            raise ApiError(404, "unknown_order", f"no order {order_id}")
        own = await books.own_facts(order_id)
        theirs, unavailable = await neighbours.timeline(order_id, request.headers["Authorization"])
        actions = await books.actions(order_id)
        cases = await books.cases(order_id)
        case_entries = [e for c in cases for e in _case_entries(c)]
        timeline = merged(own, theirs, [a.entry() for a in actions], case_entries)
        return SupportOrderView(
            order=summary_of(found[0]),
            timeline=[entry_view(e) for e in timeline],
            cases=[case_of(c) for c in cases],
            actions=[action_view(a) for a in actions],
            unavailable=[UnavailableView(source=u.source, error=u.error) for u in unavailable],
        )

    @router.post(
        "/{order_id}/actions",
        status_code=202,
        response_model=ActionAnswer,
        responses=error_responses(400, 404, 409, 422, 503),
    )
    async def act(
        order_id: OrderId,
        body: ActionRequest,
        request: Request,
        caller: SupportAct,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    ) -> JsonResponse:
        """Act on the order, recorded with who, when and why; the same Idempotency-Key repeats nothing and answers
        the first act, or 409 idempotency_key_reused if it came with another order, action, reason or amount, or from
        another person's key (by name). 409 names why an act does not apply (not_paid, already_credited,
        already_refunded, refund_in_flight, ...)."""
        if body.amount is not None and body.action is not SupportAction.GRANT_COMPENSATION:
            raise ApiError(400, "amount_not_allowed", "`amount` goes with grant_compensation only")
        request_act = Act(order_id, body.action, body.reason, body.amount, caller, idempotency_key, datetime.now(UTC))
        try:
            if body.action is SupportAction.RESEND_NOTIFICATION:
                record = await _resend(books, neighbours, request_act, request.headers["Authorization"])
            else:
                record, _ = await books.act(request_act)
        except UnknownOrder:
            raise ApiError(404, "unknown_order", f"no order {order_id}") from None
        except ActRefused as exc:
            raise ApiError(409, exc.refused.code, exc.refused.detail) from None
        except IdempotencyKeyReused:
            detail = f"Idempotency-Key {idempotency_key!r} was used for a different act request, or by another key"
            raise ApiError(409, "idempotency_key_reused", detail) from None
        except asyncpg.LockNotAvailableError:
            raise ApiError(409, "order_busy", f"order {order_id} is being changed (a refund?): try again") from None
        return JsonResponse(ActionAnswer(action=action_view(record)).model_dump(), status_code=202)

    return router


async def _resend(books: PostgresSupportBooks, neighbours: Neighbours, act: Act, authorization: str) -> ActionRecord:
    """Ask the notifier to resend (unless this Idempotency-Key did already), then record what it answered."""
    first = await books.first_under(act)
    if first is not None:
        return first
    if not await books.exists(act.order_id):
        raise UnknownOrder(act.order_id)
    try:
        answer = await neighbours.resend(act.order_id, authorization, act.reason, act.idempotency_key)
    except NeighbourFailed as exc:
        raise ApiError(503, "notifier_unavailable", exc.unavailable.error) from None
    if answer.status_code == 404:  # the order is payments', but the notifier has told its user nothing yet
        raise ApiError(409, "no_notification", f"the notifier has no notification of order {act.order_id} to resend")
    if answer.status_code >= 300:
        code = _error_code(answer) or "resend_refused"
        raise ApiError(409, code, f"the notifier answered {answer.status_code}: {answer.text[:200]}")
    record, _ = await books.record_resend(act, "resent")
    return record


def _error_code(answer: httpx.Response) -> str | None:
    try:
        code = answer.json().get("error")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None


def _case_entries(row: asyncpg.Record) -> list[Entry]:
    detail = {"case_id": row["id"], "severity": row["severity"]}
    out = [Entry(row["opened_at"], "support", "case_opened", f"{row['kind']} case opened: {row['reason']}", detail)]
    if row["acknowledged_at"] is not None:
        who = row["acknowledged_by"] or "unknown"
        out.append(Entry(row["acknowledged_at"], "support", "case_acknowledged", f"acknowledged by {who}", detail))
    if row["resolved_at"] is not None:
        summary = f"resolved by {row['resolved_by']}: {row['resolution']}"
        out.append(Entry(row["resolved_at"], "support", "case_resolved", summary, detail))
    return out
