"""The notifier's retention on the real PostgreSQL: notifications, their deliveries and resends past
NOTIFIER_NOTIFICATIONS_KEEP_S are deleted (resends first, deliveries with what they deliver), the rest kept, a pending
delivery never; each batch finds its rows by an index (migration 0010), not by reading the rows kept."""

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from notifier.adapters.retention import notification_retention, pruned
from notifier.bootstrap import MIGRATIONS
from servicekit.postgres import create_pool, migrate

DAY = 86400.0
KEEP_S = 90 * DAY
BATCH = 5000


@pytest.fixture
async def pool(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, isolation)
    await migrate(pool, MIGRATIONS)
    yield pool
    await pool.close()


async def notify(pool: asyncpg.Pool, notification_id: str, days_ago: float) -> None:
    """A notification made `days_ago`, its order named after it."""
    await pool.execute(
        "INSERT INTO notifications (notification_id, order_id, user_id, status, payload, created_at, state)"
        " VALUES ($1, $1, 'u1', 'credited', '{}', now() - make_interval(secs => $2), 'delivered')",
        notification_id,
        days_ago * DAY,
    )


async def deliver(
    pool: asyncpg.Pool, notification_id: str, target: str, days_ago: float, state: str, resend_id: str | None = None
) -> None:
    """A delivery of the notification, last attempted (or due) `days_ago`, in `state`."""
    await pool.execute(
        "INSERT INTO deliveries (notification_id, target, channel, order_id, sequence, state, next_attempt_at,"
        " resend_id) VALUES ($1, $2, 'webhook', $1, 0, $3, now() - make_interval(secs => $4), $5)",
        notification_id,
        target,
        state,
        days_ago * DAY,
        resend_id,
    )


async def resend(pool: asyncpg.Pool, resend_id: str, notification_id: str, days_ago: float) -> None:
    await pool.execute(
        "INSERT INTO resends (resend_id, notification_id, order_id, reason, requested_by, requested_at)"
        " VALUES ($1, $2, $2, 'user saw nothing', 'support', now() - make_interval(secs => $3))",
        resend_id,
        notification_id,
        days_ago * DAY,
    )


async def left(pool: asyncpg.Pool) -> tuple[set[str], set[str], set[str]]:
    """The notifications, deliveries (notification/target) and resends still there."""
    notifications = {r[0] for r in await pool.fetch("SELECT notification_id FROM notifications")}
    deliveries = {f"{r[0]}/{r[1]}" for r in await pool.fetch("SELECT notification_id, target FROM deliveries")}
    resends = {r[0] for r in await pool.fetch("SELECT resend_id FROM resends")}
    return notifications, deliveries, resends


async def test_notifications_deliveries_and_resends_past_the_keep_time_are_deleted_and_those_within_it_kept(
    pool: asyncpg.Pool,
) -> None:
    await notify(pool, "old", 91)
    await deliver(pool, "old", "webhook", 91, "delivered")
    await deliver(pool, "old", "phone", 88, "failed")  # retried for 3 days, then given up: goes with its notification
    await resend(pool, "r-old", "old", 90.5)
    await deliver(pool, "old", "phone#resend:r-old", 90.5, "delivered", resend_id="r-old")
    await notify(pool, "recent", 10)
    await deliver(pool, "recent", "webhook", 10, "delivered")
    await resend(pool, "r-recent", "recent", 5)
    await deliver(pool, "recent", "webhook#resend:r-recent", 5, "delivered", resend_id="r-recent")
    await notify(pool, "old-resent-lately", 100)  # a person resent it 10 days ago: kept with the resend
    await deliver(pool, "old-resent-lately", "webhook", 100, "delivered")
    await resend(pool, "r-lately", "old-resent-lately", 10)
    await deliver(pool, "old-resent-lately", "webhook#resend:r-lately", 10, "delivered", resend_id="r-lately")

    # "old"'s resend and "old" itself; their deliveries go with them (by the cascade, not counted), the one last
    # attempted 88 days ago included.
    assert await notification_retention(pool, KEEP_S).prune() == 2
    assert await left(pool) == (
        {"recent", "old-resent-lately"},
        # "old-resent-lately" is kept for its resend, with all its deliveries.
        {"recent/webhook", "recent/webhook#resend:r-recent"}
        | {"old-resent-lately/webhook", "old-resent-lately/webhook#resend:r-lately"},
        {"r-recent", "r-lately"},
    )


async def test_a_pending_delivery_is_kept_whatever_its_age_with_its_resend_and_notification(
    pool: asyncpg.Pool,
) -> None:
    await notify(pool, "waiting", 200)
    await deliver(pool, "waiting", "webhook", 200, "pending")  # a notifier down for months: still to send
    await deliver(pool, "waiting", "phone", 200, "delivered")
    await notify(pool, "resent", 200)
    await deliver(pool, "resent", "webhook", 200, "delivered")
    await resend(pool, "r-waiting", "resent", 150)
    await deliver(pool, "resent", "webhook#resend:r-waiting", 150, "pending", resend_id="r-waiting")

    assert await notification_retention(pool, KEEP_S).prune() == 0
    assert await left(pool) == (
        {"waiting", "resent"},
        {"waiting/webhook", "waiting/phone", "resent/webhook", "resent/webhook#resend:r-waiting"},
        {"r-waiting"},
    )


def scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of the plan that reads a table, with its children's."""
    own = [plan] if "Relation Name" in plan else []
    return own + [node for child in plan.get("Plans", []) for node in scans(child)]


def rows_read(node: dict[str, Any]) -> int:
    """The rows a scan read: those it returned and those it filtered out, over all its loops."""
    returned = int(node["Actual Rows"]) * int(node["Actual Loops"])
    return returned + int(node.get("Rows Removed by Filter", 0)) + int(node.get("Rows Removed by Index Recheck", 0))


async def test_each_pruning_batch_finds_the_rows_past_the_keep_time_by_index_not_by_reading_the_rows_kept(
    pool: asyncpg.Pool,
) -> None:
    """At 1,500 orders/s the notifier keeps hundreds of millions of rows for 90 days: a batch that read them, or a
    large share, to find the few thousand past the keep time would fall behind for good."""
    due, kept = 2000, 40_000
    for label, days_ago, n in (("due", 100.0, due), ("kept", 10.0, kept)):
        await pool.execute(
            "INSERT INTO notifications (notification_id, order_id, user_id, status, payload, created_at, state)"
            " SELECT $1 || '-' || n, $1 || '-' || n, 'u' || n, 'credited', '{}',"
            "        now() - make_interval(secs => $2), 'delivered' FROM generate_series(1, $3) AS n",
            label,
            days_ago * DAY,
            n,
        )
        for target, state in (("webhook", "delivered"), ("phone", "pending" if label == "kept" else "delivered")):
            await pool.execute(
                "INSERT INTO deliveries (notification_id, target, channel, order_id, sequence, state, next_attempt_at)"
                " SELECT $1 || '-' || n, $4, $4, $1 || '-' || n, 0, $5, now() - make_interval(secs => $2)"
                " FROM generate_series(1, $3) AS n",
                label,
                days_ago * DAY,
                n,
                target,
                state,
            )
        await pool.execute(
            "INSERT INTO resends (resend_id, notification_id, order_id, reason, requested_by, requested_at)"
            " SELECT 'r-' || $1 || '-' || n, $1 || '-' || n, $1 || '-' || n, 'why', 'support',"
            "        now() - make_interval(secs => $2) FROM generate_series(1, $3, 10) AS n",
            label,
            days_ago * DAY,
            n,
        )
    await pool.execute("ANALYZE")

    async with pool.acquire() as conn, conn.transaction():  # one transaction, to count its scans below
        for each in pruned(KEEP_S):  # resends first, as the pruning runs them; EXPLAIN ANALYZE deletes the rows
            explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {each.statement}", each.keep_s, BATCH)
            plan = orjson.loads(explained)[0]["Plan"]
            shown = orjson.dumps(plan).decode()[:2000]
            for node in scans(plan):
                table = node["Relation Name"]
                assert node["Node Type"] != "Seq Scan", f"{each.what}: a batch read all of {table} ({shown})"
                read = rows_read(node)
                assert read <= 2 * due + 10, f"{each.what}: a batch read {read} rows of {table} ({shown})"
        # The cascades (a deleted resend's deliveries, a deleted notification's resends) are no part of the plans.
        scanned = await conn.fetch(
            "SELECT relname, seq_scan FROM pg_stat_xact_user_tables"
            " WHERE schemaname = current_schema() AND seq_scan > 0"
        )
        assert {r["relname"]: r["seq_scan"] for r in scanned} == {}
    assert await pool.fetchval("SELECT count(*) FROM notifications WHERE notification_id LIKE 'due-%'") == 0
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE notification_id LIKE 'due-%'") == 0
    assert await pool.fetchval("SELECT count(*) FROM resends WHERE notification_id LIKE 'due-%'") == 0
    assert await pool.fetchval("SELECT count(*) FROM notifications") == kept
    assert await pool.fetchval("SELECT count(*) FROM deliveries") == 2 * kept
