"""The ledger's read API: wallet balances, an order's postings, and the fault knob's ground truth."""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from ledger.adapters.postgres import PostgresLedger


class WalletView(BaseModel):
    user_id: str
    balances: dict[str, int]


class OrderPostings(BaseModel):
    order_id: str
    transactions: list[dict[str, Any]]


class FaultsView(BaseModel):
    credit_dropped: list[str]


def routes(uow: Callable[[], PostgresLedger]) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/wallets/{user_id}", response_model=WalletView, tags=["wallets"])
    async def wallet(user_id: str) -> WalletView:
        """The user's wallet balances per currency, in minor units (an unknown user has none)."""
        async with uow() as tx:
            return WalletView(user_id=user_id, balances=await tx.wallet_balances(user_id))

    @router.get("/orders/{order_id}/entries", response_model=OrderPostings, tags=["orders"])
    async def order_entries(order_id: str) -> OrderPostings:
        """Every ledger transaction of the order with its entries."""
        async with uow() as tx:
            return OrderPostings(order_id=order_id, transactions=await tx.order_transactions(order_id))

    @router.get("/faults", response_model=FaultsView, tags=["development"])
    async def faults() -> FaultsView:
        """Orders whose credit the development fault knob dropped: the ground truth for scoring."""
        async with uow() as tx:
            return FaultsView(credit_dropped=await tx.injected_faults())

    return router
