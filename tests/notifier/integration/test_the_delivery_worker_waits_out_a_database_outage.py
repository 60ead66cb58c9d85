"""The delivery worker while PostgreSQL is away (stopped: every session cut, new ones refused) and when it is back:
it reads the queue less and less often, up to its cap, and says so in a few lines rather than one each try, so an
operator reading the logs of a failover sees the outage, not a flood; and once PostgreSQL is back, a delivery that
came due meanwhile is claimed and sent within about the cap. A PostgreSQL of the test's own (so it can be stopped),
the session's broker, the notifier in the test's event loop, a webhook receiver that is down at first (so the
delivery waits in the queue for its retry) and up by the time PostgreSQL comes back."""

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import pytest

from contracts.events import OrderStatus
from credited.stack.embedded import EmbeddedPostgres
from credited.stack.processes import free_port
from harness.simulator.receiver import WebhookReceiver
from notifier.adapters.delivery import QUEUE_BACKOFF
from notifier.adapters.queue import Claimed, PostgresDeliveryQueue
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.harness import change, notifier_settings, publish, start_notifier

AWAY_S = 10.0
"""How long PostgreSQL is away: long enough for the worker's backoff to reach its cap."""
MAX_READS_AWAY = 12
"""Reads of the queue tried while it is away. Polling every half second tries about 20; backing off from half a
second to a cap of a few seconds, about 6 (more than 12 only if nearly every jittered wait draws its floor)."""
MAX_LINES_AWAY = 5
"""The worker's log lines while PostgreSQL is away: the first failure and one a backoff level at most."""
RESUME_S = QUEUE_BACKOFF.cap_s + 3.0
"""How soon after PostgreSQL is back a delivery that came due meanwhile reaches its receiver: the worker's next read
comes within the backoff's cap, then the pool connects and the webhook is posted."""


async def test_the_delivery_worker_backs_off_while_the_database_is_away_and_resumes_within_its_cap(
    broker: Broker,
    own_database: EmbeddedPostgres,
    isolation: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[float] = []
    claim = PostgresDeliveryQueue.claim

    async def counted(self: PostgresDeliveryQueue, limit: int, lease_s: float, **kwargs: Any) -> Sequence[Claimed]:
        reads.append(time.monotonic())
        return await claim(self, limit, lease_s, **kwargs)

    monkeypatch.setattr(PostgresDeliveryQueue, "claim", counted)
    webhook = WebhookReceiver(free_port(), "outage-hook-secret")  # down until PostgreSQL is away
    settings = notifier_settings(
        broker,
        own_database.dsn,
        isolation,
        webhook_url=webhook.url,
        webhook_secret=webhook.secret,
        max_attempts=20,
        base_backoff_s=3.0,  # the retry after the refused first attempt comes due while PostgreSQL is away
        max_backoff_s=3.0,
    )
    running = await start_notifier(settings)
    try:
        await publish(broker, f"{isolation}.", change("ord_outage", OrderStatus.CREDITED, 2))

        async def refused_once() -> bool:
            query = (
                "SELECT count(*) FROM deliveries WHERE state = 'pending' AND attempts >= 1 AND last_error IS NOT NULL"
            )
            return bool(await running.notifier.infra.pool.fetchval(query))

        await eventually(refused_once, timeout_s=60)
        caplog.set_level(logging.INFO, logger="notifier.adapters.delivery")
        await asyncio.to_thread(own_database.stop)
        caplog.clear()
        stopped = time.monotonic()
        await webhook.start()
        await asyncio.sleep(AWAY_S)
        reads_away = [t for t in reads if t >= stopped]
        lines_away = [r.getMessage() for r in caplog.records if r.name == "notifier.adapters.delivery"]

        await asyncio.to_thread(own_database.start)
        back = time.monotonic()
        await eventually(lambda: len(webhook.received.payloads) >= 1, timeout_s=60, interval_s=0.05)
        resumed_s = time.monotonic() - back
    finally:
        await running.stop()
        await webhook.stop()

    summary = (
        f"{len(reads_away)} reads of the queue over {AWAY_S:.0f}s away, {len(lines_away)} lines from the worker:\n"
        + "\n".join(lines_away)
    )
    assert len(reads_away) <= MAX_READS_AWAY, summary
    assert len(lines_away) <= MAX_LINES_AWAY, summary
    assert resumed_s <= RESUME_S, f"the delivery reached its receiver {resumed_s:.1f}s after PostgreSQL was back"
    assert [p["order_id"] for p in webhook.received.payloads.values()] == ["ord_outage"]
    assert webhook.received.duplicates == 0
