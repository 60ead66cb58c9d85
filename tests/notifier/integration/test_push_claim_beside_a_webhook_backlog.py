"""A long outage of the platform's webhook leaves many webhook deliveries due while the webhook's own connections are
all taken (each request hung until its timeout): the worker's claim then skips the webhook channel, and a claim for
users' pushes must read about as many rows as it claims, not every due webhook row ahead of them. Real PostgreSQL,
the notifier's migrations; the backlog written with plain SQL."""

import json
from typing import Any

import asyncpg

from notifier.adapters.queue import _CLAIM, PostgresDeliveryQueue
from tests.notifier.integration.webhook_backlog import pool, queue_backlog  # noqa: F401 - the fixture

WEBHOOK_BACKLOG = 200_000
PUSHES = 50
LIMIT = 200
LEASE_S = 30.0
READ_AT_MOST = 5_000  # rows read past the filter, or buffers touched: a few times what the claim takes, not the backlog


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


async def test_a_push_claim_reads_no_due_webhook_rows_while_the_webhook_channel_is_full(pool: asyncpg.Pool) -> None:  # noqa: F811
    await queue_backlog(pool, webhook=WEBHOOK_BACKLOG, pushes=PUSHES)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")  # as fetch_planned_now claims
            raw = await conn.fetchval(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _CLAIM, LIMIT, LEASE_S, ["fcm", "webpush"]
            )
        finally:
            await tx.rollback()
    [explained] = json.loads(raw) if isinstance(raw, str) else raw
    nodes = _nodes(explained["Plan"])
    removed = sum(int(n.get("Rows Removed by Filter", 0)) for n in nodes)
    top = explained["Plan"]
    buffers = int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))
    claimed = await PostgresDeliveryQueue(pool).claim(LIMIT, LEASE_S, channels=["fcm", "webpush"])
    assert sorted({c.target.channel for c in claimed}) == ["webpush"]
    assert len(claimed) == PUSHES
    walked = ", ".join(
        f"{n['Node Type']} {n.get('Index Name', n.get('Relation Name', ''))}: {n['Rows Removed by Filter']} removed"
        for n in nodes
        if n.get("Rows Removed by Filter")
    )
    assert removed < READ_AT_MOST and buffers < READ_AT_MOST, (
        f"claiming {PUSHES} due pushes beside {WEBHOOK_BACKLOG} due webhook deliveries (webhook skipped) read past"
        f" {removed} rows by filter and touched {buffers} buffers ({walked}); took {explained['Execution Time']:.0f} ms"
    )
