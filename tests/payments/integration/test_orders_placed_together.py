"""Orders placed together (one group, one transaction) on the real PostgreSQL: a group that fails after its commit
is handled again one request at a time, and that finds each request's committed order instead of placing another."""

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence

import asyncpg
import httpx
import pytest

from payments.adapters.orders import PostgresOrderBook
from payments.bootstrap import build
from payments.config import Settings
from payments.domain import Order
from payments.ports import Announcement, KeyHolder, NewOrder
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.service_settings import settings_for

REQUESTS = 6


@pytest.fixture
async def api(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    # the longest window the settings allow, so the requests sent together reach one group
    settings = settings_for(Settings, broker, database_url, isolation, group_window_ms=50)
    infra, app = await build(settings)
    headers = await bearer(infra.keys)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as client:
        yield client, settings
    await infra.close()


class FailingOnceAfterTheCommit:
    """The read after a group's placing fails once: the group's orders are committed, its answers are not."""

    def __init__(self) -> None:
        self.failed_group: int | None = None
        self._place = PostgresOrderBook.place
        self._find_many = PostgresOrderBook.find_many
        self._last_group = 0

    async def place(
        self, book: PostgresOrderBook, orders: Sequence[NewOrder], announcements: Sequence[Announcement]
    ) -> list[KeyHolder | None]:
        self._last_group = len(orders)
        return await self._place(book, orders, announcements)

    async def find_many(self, book: PostgresOrderBook, order_ids: Collection[str]) -> dict[str, Order]:
        if self.failed_group is None and self._last_group > 1:
            self.failed_group = self._last_group
            raise ConnectionResetError("the connection dropped after the commit")
        return await self._find_many(book, order_ids)


async def test_a_group_of_orders_that_fails_after_its_commit_places_each_request_once(
    api: tuple[httpx.AsyncClient, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, settings = api
    fault = FailingOnceAfterTheCommit()
    monkeypatch.setattr(PostgresOrderBook, "place", lambda book, *args: fault.place(book, *args))
    monkeypatch.setattr(PostgresOrderBook, "find_many", lambda book, ids: fault.find_many(book, ids))
    bodies = [{"user_id": f"u{n}", "amount": 600 + n, "currency": "CNY", "channel": "alipay"} for n in range(REQUESTS)]
    keyed = {"Idempotency-Key": "k-together"}  # one request with a key, the rest without
    answers = await asyncio.gather(
        *(client.post("/v1/orders", json=body, headers=keyed if n == 0 else {}) for n, body in enumerate(bodies))
    )
    assert fault.failed_group is not None and fault.failed_group > 1, "no group of orders was placed"
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.db_schema})
    try:
        rows = await conn.fetch("SELECT order_id, user_id FROM orders")
        announced = await conn.fetchval("SELECT count(*) FROM outbox")
    finally:
        await conn.close()
    assert sorted(r["user_id"] for r in rows) == sorted(body["user_id"] for body in bodies)  # one order each
    assert announced == REQUESTS  # one OrderPlaced each: no relay runs here to drain the outbox
    # each answered as the request that created its order, with the order committed for it
    assert [a.status_code for a in answers] == [201] * REQUESTS, [a.text for a in answers]
    assert {a.json()["order_id"]: a.json()["user_id"] for a in answers} == {r["order_id"]: r["user_id"] for r in rows}
