"""The ledger's processed_events (servicekit's dedupe table): one row per consumed event id, written in every
batch, and deleted once older than CREDITED_PROCESSED_EVENTS_KEEP_S (servicekit.retention). A row can only ever
match a redelivery while the event can still be redelivered (the topic's retention, 7 days by default, or a dead
letter's replay); past that it is dead weight in the primary, its WAL, its replicas and its backups."""

from datetime import UTC, datetime

from contracts.codec import envelope_for
from ledger import handlers
from ledger.adapters.postgres import PostgresLedger
from ledger.bootstrap import build
from ledger.config import Settings
from servicekit.retention import Retention
from tests.conftest import Broker
from tests.ledger.messages import payment
from tests.service_settings import settings_for

N = 300


async def _pay(uow: object, first: int, n: int) -> None:
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    batch = []
    for i in range(first, first + n):
        message = payment(f"ord_{stamp}_{i}")
        batch.append((message, envelope_for(message, producer="payments", event_id=f"pay-{stamp}-{i}")))
    await handlers.handle_batch(batch, uow=uow)  # type: ignore[arg-type]


async def test_processed_event_ids_older_than_any_redelivery_do_not_stay_in_the_ledger_database_for_ever(
    broker: Broker, database_url: str, isolation: str
) -> None:
    """Every paid order leaves a processed_events row in the ledger that nothing ever deletes. Once older than the
    topics' retention no redelivery can match it, yet it stays: the table grows with every order for as long as
    the ledger runs. Measured here at 300 bytes a row with its primary key in a small table (about 150 in a
    large one); at 1,500 orders/s that is
    129.6 million rows and some 20-25 GB a day in the ledger primary (7-9 TB a year, before WAL, replicas and
    backups), and the dedupe insert's index keeps growing with it. Expected: rows past the redelivery window are
    pruned (by processed_at), so the table holds about one window of events."""
    settings = settings_for(Settings, broker, database_url, isolation)
    infra, _ = await build(settings)
    try:
        uow = infra.outbox_writers(PostgresLedger)
        await _pay(uow, 0, N)
        assert await infra.pool.fetchval("SELECT count(*) FROM processed_events") == N
        # A month old: far past Kafka's 7-day retention and the dead letters', nothing can redeliver these.
        await infra.pool.execute("UPDATE processed_events SET processed_at = now() - interval '30 days'")
        await _pay(uow, N, N)
        pruned = await Retention(infra.pool, keep_s=settings.processed_events_keep_s, batch=100).prune()
        assert pruned == N
        rows = await infra.pool.fetchval("SELECT count(*) FROM processed_events")
        assert rows == N  # this month's: a copy of those may still come
        size = await infra.pool.fetchval("SELECT pg_total_relation_size('processed_events')")
        stale = await infra.pool.fetchval(
            "SELECT count(*) FROM processed_events WHERE processed_at < now() - interval '8 days'"
        )
        assert stale == 0, (
            f"processed_events holds {rows} rows ({size} bytes, {size / rows:.0f} per row with its key) after"
            f" {2 * N} orders; {stale} of them are a month old and can never match a redelivery: nothing prunes it"
        )
    finally:
        await infra.close()
