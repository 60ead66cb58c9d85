"""The status pages' change feed (PostgresOrderFeed) while PostgreSQL restarts or is away for a while (stopped: every
session cut, new ones refused): it notices the lost LISTEN connection at once, not at its next check, so after a short
restart a change made right after it wakes the order's open pages within a second or two, not at their heartbeat; and
while PostgreSQL stays away it tries again less and less often and says so in a few lines, then one when it listens
again. A PostgreSQL of the test's own (so it can be stopped); the feed in the test's event loop; a change is the
NOTIFY its transaction sends (PostgresNotifications)."""

import asyncio
import logging
import time

import asyncpg
import pytest

from credited.stack.embedded import EmbeddedPostgres
from notifier.adapters.feed import FEED_BACKOFF, PostgresOrderFeed
from notifier.adapters.postgres import notify_channel

SCHEMA = "feed_restart"
NOTICED_S = 2.0
"""How soon the feed notices that PostgreSQL ended its LISTEN session: when it happens (asyncpg's termination listener),
not at its periodic check (every 10 s)."""
LIVE_S = FEED_BACKOFF.cap_s + 3.0
"""How soon after PostgreSQL is back a change made then wakes the order's open page: the feed, retrying since it
noticed the loss, listens again within the backoff's cap (however long the restart took), where a page's heartbeat
(15 s) is what it would fall back to."""
AWAY_S = 20.0
"""How long PostgreSQL stays away in the second test: a failover's worth, long enough for the backoff to reach its
cap."""
MAX_LINES_AWAY = 5
"""The feed's log lines while PostgreSQL is away: the loss and one a backoff level at most (retrying every second
logs one a second)."""
BACK_S = FEED_BACKOFF.cap_s + 3.0
"""How soon after PostgreSQL is back the feed listens again: its next try comes within the backoff's cap."""


async def _announce(dsn: str, order_id: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_notify($1, $2)", notify_channel(SCHEMA), order_id)
    finally:
        await conn.close()


async def test_a_change_made_right_after_a_short_database_restart_wakes_an_open_page_within_seconds(
    own_database: EmbeddedPostgres,
) -> None:
    feed = PostgresOrderFeed(own_database.dsn, SCHEMA)
    running = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.listening.wait(), 30)
        with feed.watch("ord_restart") as woken:
            await asyncio.to_thread(own_database.stop)
            stopped = time.monotonic()
            while feed.listening.is_set() and time.monotonic() - stopped < 20:
                await asyncio.sleep(0.02)
            noticed_s = time.monotonic() - stopped
            await asyncio.to_thread(own_database.start)
            woken.clear()  # a page re-reads when woken: from here on, the change below must wake it
            await _announce(own_database.dsn, "ord_restart")
            announced = time.monotonic()
            try:
                await asyncio.wait_for(woken.wait(), 20)
            except TimeoutError:
                pytest.fail("the page was not woken within 20 s of the change")
            woken_s = time.monotonic() - announced
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    assert noticed_s <= NOTICED_S, f"the feed noticed its lost session {noticed_s:.1f}s after PostgreSQL stopped"
    assert woken_s <= LIVE_S, f"the page was woken {woken_s:.1f}s after a change made right after the restart"


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_the_feed_backs_off_while_the_database_is_away_and_says_so_in_a_few_lines(
    own_database: EmbeddedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    feed = PostgresOrderFeed(own_database.dsn, SCHEMA)
    running = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.listening.wait(), 30)
        caplog.set_level(logging.INFO, logger="notifier.adapters.feed")
        with feed.watch("ord_away") as woken:
            await asyncio.to_thread(own_database.stop)
            caplog.clear()
            await asyncio.sleep(AWAY_S)
            lines_away = [r.getMessage() for r in caplog.records if r.name == "notifier.adapters.feed"]
            listening_away = feed.listening.is_set()
            woken.clear()  # before the return: the feed may listen again, and wake the page, before start() returns
            await asyncio.to_thread(own_database.start)
            back = time.monotonic()
            try:
                await asyncio.wait_for(feed.listening.wait(), 30)
            except TimeoutError:
                pytest.fail("the feed did not listen again within 30 s of PostgreSQL's return")
            listening_s = time.monotonic() - back
            await asyncio.wait_for(woken.wait(), 1)  # the open page re-reads what it may have missed
        lines_back = [r.getMessage() for r in caplog.records if r.name == "notifier.adapters.feed"][len(lines_away) :]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    summary = f"{len(lines_away)} lines from the feed over {AWAY_S:.0f}s away:\n" + "\n".join(lines_away)
    assert not listening_away, summary
    assert 1 <= len(lines_away) <= MAX_LINES_AWAY, summary
    assert listening_s <= BACK_S, f"the feed listened again {listening_s:.1f}s after PostgreSQL was back"
    assert any("listening again" in line for line in lines_back), lines_back
