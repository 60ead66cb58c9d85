"""A backlog of due deliveries written in plain SQL: the platform webhook's, due for a minute and more, and a few
users' pushes, due since ten seconds ago; and a notifier schema of the test's own to write it in."""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from notifier.bootstrap import MIGRATIONS
from servicekit.postgres import create_pool, migrate


@pytest.fixture
async def pool(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool working in this test's own schema, the notifier's migrations applied; the schema dropped after."""
    pool = await create_pool(database_url, isolation)
    await migrate(pool, MIGRATIONS)
    yield pool
    async with pool.acquire() as conn:
        await conn.execute(f'DROP SCHEMA "{isolation}" CASCADE')
    await pool.close()


# `$2` notifications of orders '<$1>_<i>', each with one delivery of channel `$3` (to the webhook, or to the push
# subscription 'sub_<i>' of user 'u_<$1>_<i>'), due since `$4` seconds ago and earlier, a hundredth of a second apart.
_QUEUED = """
WITH n AS (
    INSERT INTO notifications (notification_id, order_id, user_id, status, payload, sequence, created_at)
    SELECT 'n_' || $1 || '_' || i, $1 || '_' || i, 'u_' || $1 || '_' || i, 'credited', '{}'::jsonb, 2,
           now() - make_interval(secs => $4 + i * 0.01)
    FROM generate_series(1, $2) AS i
    RETURNING notification_id, order_id, created_at, split_part(order_id, '_', 2) AS i
)
INSERT INTO deliveries (notification_id, target, channel, order_id, sequence, subscription_id, attempts,
                        next_attempt_at)
SELECT notification_id, CASE WHEN $3 = 'webhook' THEN 'webhook' ELSE 'sub_' || i END, $3, order_id, 2,
       CASE WHEN $3 = 'webhook' THEN NULL ELSE 'sub_' || i END, 3, created_at
FROM n
"""
_SUBSCRIBED = """
INSERT INTO push_subscriptions (subscription_id, user_id, channel, endpoint)
SELECT 'sub_' || i, 'u_push_' || i, 'webpush', 'https://push.example/' || i FROM generate_series(1, $1) AS i
"""


async def queue_backlog(pool: asyncpg.Pool, *, webhook: int, pushes: int) -> None:
    """`webhook` deliveries to the webhook, due for a minute and (the oldest) longer, and `pushes` Web Push deliveries
    due since ten seconds ago, to subscriptions of their users ('sub_<i>')."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_QUEUED, "hook", webhook, "webhook", 60)
        await conn.execute(_SUBSCRIBED, pushes)
        await conn.execute(_QUEUED, "push", pushes, "webpush", 10)
    await pool.execute("ANALYZE deliveries, notifications, push_subscriptions")
