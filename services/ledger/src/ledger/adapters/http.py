"""The ledger's HTTP API: wallet balances, an order's postings, the user directory, and the fault knob's
ground truth."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from contracts.base import Currency, OrderId, UserId
from ledger.adapters.postgres import PostgresLedger
from servicekit.http import ApiError, error_responses
from servicekit.identity import Caller, Scope, requires, requires_any
from servicekit.pages import Window, next_cursor, window


class WalletView(BaseModel):
    user_id: str
    balances: dict[str, int]


class OrderPostings(BaseModel):
    order_id: str
    transactions: list[dict[str, Any]]


class CreditView(BaseModel):
    """A credit the ledger posted: the order's money in the user's wallet."""

    transaction_id: str
    order_id: str
    user_id: str
    amount: int
    currency: str
    created_at: str


class CreditsPage(BaseModel):
    credits: list[CreditView]
    next: str | None = Field(description="Pass as `after` for the next page; null on the last page.")


class FaultsView(BaseModel):
    credit_dropped: list[str]


class UserRegistration(BaseModel):
    """The currency the user's wallet is kept in; credits in any other currency are refused."""

    model_config = ConfigDict(extra="forbid")

    currency: Currency


class UserView(BaseModel):
    user_id: str
    currency: str


def _key(scope: Scope) -> Any:
    return Depends(requires(scope))


def routes(uow: Callable[[], PostgresLedger]) -> APIRouter:
    """Every route needs an API key: wallets:read, users:write, orders:read (or support:read) for an order's
    entries, audit:read for the money audit's bulk read, or support:read for the fault knob's ground truth (what
    the development simulator scores against; never open)."""
    router = APIRouter(prefix="/v1", responses=error_responses(422))

    @router.get("/wallets/{user_id}", response_model=WalletView, tags=["wallets"])
    async def wallet(user_id: UserId, _: Annotated[Caller, _key(Scope.WALLETS_READ)]) -> WalletView:
        """The user's wallet balances per currency, in minor units (an unknown user has none)."""
        async with uow() as tx:
            return WalletView(user_id=user_id, balances=await tx.wallet_balances(user_id))

    @router.put("/users/{user_id}", response_model=UserView, tags=["users"], responses=error_responses(400, 409))
    async def register_user(
        user_id: UserId, body: UserRegistration, _: Annotated[Caller, _key(Scope.USERS_WRITE)]
    ) -> UserView:
        """Register a user the ledger may credit, with their wallet's currency (repeating it changes nothing)."""
        async with uow() as tx:
            held = await tx.register_user(user_id, body.currency)
        if held != body.currency:
            raise ApiError(409, "currency_conflict", f"user {user_id}'s wallet is kept in {held}, not {body.currency}")
        return UserView(user_id=user_id, currency=held)

    @router.get("/orders/{order_id}/entries", response_model=OrderPostings, tags=["orders"])
    async def order_entries(
        order_id: OrderId, _: Annotated[Caller, Depends(requires_any(Scope.ORDERS_READ, Scope.SUPPORT_READ))]
    ) -> OrderPostings:
        """Every ledger transaction of the order with its entries (orders:read, or support:read for payments'
        support timeline, which asks with the support agent's own key)."""
        async with uow() as tx:
            return OrderPostings(order_id=order_id, transactions=await tx.order_transactions(order_id))

    @router.get("/audit/credits", response_model=CreditsPage, tags=["audit"], responses=error_responses(400))
    async def audit_credits(
        _: Annotated[Caller, _key(Scope.AUDIT_READ)], page: Annotated[Window, Depends(window)]
    ) -> CreditsPage:
        """Every wallet credit posted in [since, until), oldest first, in keyset pages (for the money audit)."""
        async with uow() as tx:
            rows = await tx.credits_between(page)
        credits = [CreditView(**{**r, "created_at": r["created_at"].isoformat()}) for r in rows]
        cursor = next_cursor([(r["created_at"], r["transaction_id"]) for r in rows], page.limit)
        return CreditsPage(credits=credits, next=cursor)

    @router.get("/faults", response_model=FaultsView, tags=["development"])
    async def faults(_: Annotated[Caller, _key(Scope.SUPPORT_READ)]) -> FaultsView:
        """Orders whose credit the development fault knob dropped: the ground truth for scoring."""
        async with uow() as tx:
            return FaultsView(credit_dropped=await tx.injected_faults())

    return router
