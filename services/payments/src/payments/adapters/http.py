"""The payments HTTP API: orders for platform backends, callbacks for payment providers."""

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from contracts.base import Channel, Currency, MinorUnits, OrderId, Product, UserId
from payments.adapters.grouping import GroupCommit
from payments.adapters.metrics import PrometheusPaymentsMetrics
from payments.callbacks import Callback, CallbackBody, CallbackResult
from payments.domain import Order, ReviewVerdict, Settlements
from payments.handlers import IdempotencyConflict, Placed, PlaceOrder
from payments.ports import Clock, UnitOfWorkFactory
from payments.review import ReviewDecision, handle_review_decision
from servicekit.http import STORABLE_TEXT, ApiError, JsonResponse, error_body, error_responses
from servicekit.identity import Caller, Scope, requires


class SystemClock:
    def now(self) -> float:
        return time.time()


class OrderRequest(BaseModel):
    """A top-up order: amount in integer minor units."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    amount: MinorUnits
    currency: Currency
    channel: Channel
    product: Product | None = None


class ReviewRequest(BaseModel):
    """The risk team's verdict on an order held for review."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["release", "reject"]
    reason: str = Field(default="", max_length=200, pattern=STORABLE_TEXT)


class ReviewedBy(BaseModel):
    """The API key that decided a risk review, as it was named then."""

    key_id: str
    name: str | None


class OrderView(BaseModel):
    order_id: str
    user_id: str
    amount: int
    currency: str
    channel: str
    status: str = Field(description="Lifecycle: submitted, paid, payment_failed, credited, delayed, refunded, ...")
    payment_status: str
    provider: str | None
    provider_txn_id: str | None
    created_at: str
    paid_at: str | None
    product: str | None = None
    review_status: str | None = Field(None, description="Risk review: null (never held), held, released, rejected.")
    review_expected_at: str | None = None
    reviewed_by: ReviewedBy | None = Field(None, description="The API key that decided the risk review.")


class OrderWithLink(OrderView):
    status_url: str | None = Field(
        description="The user's status page for this order, with a signed token bound to the order and the user "
        "that expires (null when payments has no PAYMENTS_STATUS_BASE_URL); hand it to the user, not the order id."
    )


StatusLink = Callable[[Order], str | None]
"""The signed status-page link of an order (for its user), or None when no status page is configured."""


class CallbackAnswer(BaseModel):
    """The callback was applied, or was a repeat of one that was, or changes nothing (a failure after a success)."""

    result: Literal["applied", "duplicate", "ignored"]
    order_id: str | None
    detail: str


# The callback's body is read raw (its signature covers the exact bytes), so its schema is declared here.
_CALLBACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": CallbackBody.model_json_schema()}},
        "description": "The provider's notice, signed byte for byte in X-Signature.",
    }
}
# Any printable name reaches the handler, which keeps an unknown provider's callback for audit; control
# characters (NUL cannot even be stored) are refused at the edge.
ProviderName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]


def view(order: Order) -> dict[str, object]:
    """The order as the API shows it: exactly OrderView's fields, in its order."""
    return {
        "order_id": order.order_id,
        "user_id": order.user_id,
        "amount": order.amount,
        "currency": order.currency,
        "channel": order.channel,
        "status": order.status,
        "payment_status": order.payment_status.value,
        "provider": order.provider,
        "provider_txn_id": order.provider_txn_id,
        "created_at": order.created_at.isoformat(),
        "paid_at": order.paid_at.isoformat() if order.paid_at else None,
        "product": order.product,
        "review_status": order.review_status,
        "review_expected_at": order.review_expected_at.isoformat() if order.review_expected_at else None,
        "reviewed_by": (
            None
            if order.reviewed_by_key_id is None
            else {"key_id": order.reviewed_by_key_id, "name": order.reviewed_by_key_name}
        ),
    }


def linked_view(order: Order, status_url: StatusLink) -> dict[str, object]:
    """The order as its creator and readers see it: the view and the user's signed status link."""
    return {**view(order), "status_url": status_url(order)}


def _view(order: Order) -> OrderView:
    return OrderView.model_validate(view(order))


def routes(
    *,
    uow: UnitOfWorkFactory,
    orders: GroupCommit[PlaceOrder, Placed],
    callbacks: GroupCommit[Callback, CallbackResult],
    find_order: Callable[[str], Awaitable[Order | None]],
    metrics: PrometheusPaymentsMetrics,
    clock: Clock,
    status_url: StatusLink,
    settlements: Settlements,
) -> APIRouter:
    """Orders and callbacks go through their group commits; reads and risk decisions are single requests."""
    router = APIRouter(prefix="/v1")

    @router.post(
        "/orders",
        status_code=201,
        response_model=OrderWithLink,
        tags=["orders"],
        responses={
            200: {"model": OrderWithLink, "description": "The order this Idempotency-Key created before"},
            **error_responses(400, 409, 422),
        },
    )
    async def place_order(
        body: OrderRequest,
        caller: Annotated[Caller, Depends(requires(Scope.ORDERS_WRITE))],
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    ) -> JsonResponse:
        """Create a top-up order. Repeating a request with the same Idempotency-Key returns the same order; the key
        is the API key's own (by its name): another key's request with it is refused 409 idempotency_key_reused.
        `status_url` is the link to give the user: it opens the order's status page, and only that one. An order in
        a currency its channel's provider does not settle in is refused 422 currency_not_supported."""
        refused = settlements.refusal(body.channel, body.currency)
        if refused is not None:
            raise ApiError(422, "currency_not_supported", f"{body.currency}: {refused}")
        cmd = PlaceOrder(
            body.user_id, body.amount, body.currency, body.channel, idempotency_key, body.product, caller.name
        )
        placed = await orders.submit(cmd)
        if isinstance(placed, IdempotencyConflict):
            raise ApiError(409, "idempotency_key_reused", str(placed))
        order, created = placed
        if created:
            metrics.order_created(order.channel)
        return JsonResponse(linked_view(order, status_url), status_code=201 if created else 200)

    @router.get(
        "/orders/{order_id}", response_model=OrderWithLink, tags=["orders"], responses=error_responses(404, 422)
    )
    async def get_order(order_id: OrderId, _: Annotated[Caller, Depends(requires(Scope.ORDERS_READ))]) -> OrderWithLink:
        """The order and its lifecycle status, with a fresh status link for its user."""
        order = await find_order(order_id)
        if order is None:
            raise ApiError(404, "unknown_order", f"no order {order_id}")
        return OrderWithLink.model_validate(linked_view(order, status_url))

    @router.post(
        "/psp/{provider}/callbacks",
        response_model=CallbackAnswer,
        tags=["providers"],
        openapi_extra=_CALLBACK_BODY,
        responses=error_responses(401, 404, 409, 422),
    )
    async def callback(
        provider: ProviderName,
        request: Request,
        x_signature: Annotated[str | None, Header()] = None,
    ) -> Response:
        """A provider's signed payment notice: X-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "t.body")>
        for the simulated provider, answered with this JSON; WeChat Pay's and Alipay's in their own protocol
        (signature headers, form body), answered in their own form (204 or a FAIL object; `success`/`fail`)."""
        callback = Callback(provider, await request.body(), x_signature, headers=dict(request.headers))
        result = await callbacks.submit(callback)
        metrics.callback(provider, result.outcome)
        if result.reply is not None:
            reply = result.reply
            return Response(reply.body, status_code=reply.status_code, media_type=reply.content_type)
        if result.status_code >= 400:
            return JsonResponse(error_body(result.code, result.detail), status_code=result.status_code)
        return JsonResponse({"result": result.code, "order_id": result.order_id, "detail": result.detail})

    @router.post(
        "/orders/{order_id}/review",
        response_model=OrderView,
        tags=["risk"],
        responses=error_responses(400, 404, 409, 422),
    )
    async def review_order(
        order_id: OrderId, body: ReviewRequest, caller: Annotated[Caller, Depends(requires(Scope.REVIEW_DECIDE))]
    ) -> OrderView:
        """The risk team releases or rejects an order held for review, recorded with the deciding key; the same
        decision again is a no-op."""
        decision = ReviewDecision(order_id, ReviewVerdict(body.decision), body.reason, (caller.key_id, caller.name))
        result = await handle_review_decision(decision, uow=uow, clock=clock)
        if result.status_code >= 400 or result.order is None:
            raise ApiError(result.status_code, result.code, result.detail)
        return _view(result.order)

    return router
