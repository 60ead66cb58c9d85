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
from aiohttp import web

from contracts.events import OrderStatus
from credited.stack.embedded import EmbeddedPostgres
from credited.stack.processes import free_port
from harness.simulator.receiver import WebhookReceiver
from notifier.adapters.delivery import QUEUE_BACKOFF
from notifier.adapters.queue import Claimed, PostgresDeliveryQueue
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.loopback_http import serving
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


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
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


SETTLE_AWAY_S = 14.0
"""How long PostgreSQL is away while the worker holds an outcome it cannot write: long enough for the backoff to
reach its cap, about the delivery's lease (2 x the webhook's 6 s timeout + 5 s), so the lease's extension, due past
half of it, fails for several seconds too."""
MAX_TRIES_LINES = 5
"""The worker's lines about settling or about extending leases while PostgreSQL is away, each: the first failure and
one a backoff level at most (retrying every half second logs about two a second)."""


@pytest.mark.long  # waits out an outage, a grace or a timeout: the long tests' lane
async def test_the_delivery_worker_backs_off_writing_an_outcome_while_the_database_is_away_and_writes_it_when_back(
    broker: Broker, own_database: EmbeddedPostgres, isolation: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A webhook request is in flight when PostgreSQL goes away and answered just after: the worker holds the
    outcome, tries to write it (and to extend the delivery's lease, past half of it) until PostgreSQL is back, and
    writes it within about the backoff's cap of its return."""
    requested, answer = asyncio.Event(), asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        requested.set()
        await answer.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serving(app) as port:
        settings = notifier_settings(
            broker,
            own_database.dsn,
            isolation,
            webhook_url=f"http://127.0.0.1:{port}/hook",
            webhook_secret="outage-hook-secret",
            webhook_timeout_s=6.0,
        )
        running = await start_notifier(settings)
        try:
            await publish(broker, f"{isolation}.", change("ord_held", OrderStatus.CREDITED, 2))
            await asyncio.wait_for(requested.wait(), 60)
            caplog.set_level(logging.INFO, logger="notifier.adapters.delivery")
            await asyncio.to_thread(own_database.stop)
            caplog.clear()
            answer.set()  # delivered: an outcome the database cannot take
            await asyncio.sleep(SETTLE_AWAY_S)
            lines_away = [r.getMessage() for r in caplog.records if r.name == "notifier.adapters.delivery"]

            await asyncio.to_thread(own_database.start)
            back = time.monotonic()

            async def written() -> bool:
                query = "SELECT count(*) FROM deliveries WHERE state = 'delivered'"
                return bool(await running.notifier.infra.pool.fetchval(query))

            await eventually(written, timeout_s=60, interval_s=0.1)
            written_s = time.monotonic() - back
        finally:
            await running.stop()

    settling = [line for line in lines_away if "settle" in line]
    extending = [line for line in lines_away if "extend" in line]
    summary = f"{len(lines_away)} lines from the worker over {SETTLE_AWAY_S:.0f}s away:\n" + "\n".join(lines_away)
    assert 1 <= len(settling) <= MAX_TRIES_LINES, summary
    assert 1 <= len(extending) <= MAX_TRIES_LINES, summary
    assert written_s <= RESUME_S, f"the outcome was written {written_s:.1f}s after PostgreSQL was back"
