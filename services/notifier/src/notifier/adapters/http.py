"""The notifier's HTTP API: the development inbox and an order's notifications."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from notifier.adapters.postgres import PostgresNotifications


class InboxView(BaseModel):
    user_id: str
    notifications: list[dict[str, Any]]


class OrderNotifications(BaseModel):
    order_id: str
    notifications: list[dict[str, Any]]


def routes(uow: Callable[[], PostgresNotifications]) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/inbox/{user_id}", response_model=InboxView, tags=["inbox"])
    async def inbox(user_id: str, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> InboxView:
        """The user's notifications, newest first: the development inbox."""
        async with uow() as tx:
            return InboxView(user_id=user_id, notifications=await tx.inbox(user_id, limit))

    @router.get("/orders/{order_id}/notifications", response_model=OrderNotifications, tags=["inbox"])
    async def order_notifications(order_id: str) -> OrderNotifications:
        """Every notification about one order with its delivery state."""
        async with uow() as tx:
            return OrderNotifications(order_id=order_id, notifications=await tx.for_order(order_id))

    return router
