"""The transactional outbox: events are rows written with the state change; a relay publishes them.

No gap between commit and publish: a crash after commit leaves the row for the next relay run; a
rollback leaves no row. No transaction stays open while Kafka answers: a relay claims a batch of rows in
one short statement (each row is marked with the claiming relay's database session, its backend pid),
hands them to the producer, and deletes them only after the broker acknowledged every one. It claims and
sends the next batch while the acknowledgements of the previous ones are outstanding. Acknowledged rows are
deleted by the relay's next claim, which a commit prompts, or at the latest `delete_after_s` later: at a few
commits a second, a claim only to delete would double the relay's statements.

A commit prompts the relay in its own process (`wake`, which PostgresUnitOfWork calls after a commit that wrote
the outbox): every writer of a service's outbox runs in a process of that service, beside its relay. There is no
NOTIFY: a notifying commit holds a lock for the whole cluster through its WAL flush (see the migration
0003_outbox_without_notify.sql). A row no wake announced waits for the poll, `poll_interval_s`.

Two relays never hold the same row: a claim takes only unclaimed rows, under SKIP LOCKED. Nor does a claim ever wait
for another relay's: its delete of acknowledged rows skips a row another claim holds locked for a moment and deletes
it with the next claim (`_CLAIM` says why that matters). A relay that dies anywhere leaves its claimed rows marked
with a session (pid and start) that no longer exists; every relay gives such rows back (when it starts and every few
seconds), so they are published again, under the same event ids, which consumers drop. The only repeats are rows
whose relay died (or lost its database session) before deleting them.

Every row is acknowledged on its own: the rows the broker took are deleted whatever happened to the others of their
batch. A row the broker could not take for its producer's sake (the records after a refused one on its partition,
which KafkaPublisher's fresh producer takes) is given back and published again, possibly after rows claimed later
(consumers tolerate that order: every message may arrive late). A row refused for good for what it is (larger than
its topic's max.message.bytes) is marked and sent alone, never again in a batch with others (the broker refuses a
partition's batch whole); refused alone too, it is set aside: it stays in the outbox, which no claim of a batch
takes it from, and is sent alone again with a growing pause (`REFUSED_PAUSE_CAP_S` at most), so it goes out by itself
once the broker side is fixed (the OutboxBacklog runbook), and it is reported once: an error log line, the
`credited_dead_letters_total{group="outbox"}` metric, and a dead letter (`dlq_source: outbox relay`) naming its
schema, outbox id, topic, key and reason, without its value (which the row keeps), for `credited dlq list` to show.
A topic the service may not write (authorization) is not the row's fault and is fixed by an ACL: such rows are given
back and retried every poll through a fresh producer, never set aside.

A statement of the relay gets no answer within `STATEMENT_TIMEOUT_S` (the database host vanished): the connection is
closed, never used again, and the relay goes on with a new one; its claims are given back once its session is gone.
"""

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiokafka import errors as kafka_errors
from asyncpg.pool import PoolConnectionProxy

from contracts.codec import Record
from contracts.topics import Topic
from servicekit.errors import Dependency, classify
from servicekit.kafka import TOO_LARGE, KafkaPublisher, producer_fault, trimmed
from servicekit.metrics import DeadLetterKind, OutboxMetrics
from servicekit.retrying import BackoffPolicy, Readiness

log = logging.getLogger(__name__)

Connection = asyncpg.Connection | PoolConnectionProxy

OUTBOX_COLUMNS = "topic, key, value, headers"
"""The columns `outbox_arrays` fills, in its order (text, bytea, bytea, jsonb)."""


def outbox_arrays(entries: Sequence[tuple[str, Record]]) -> tuple[list[str], list[bytes], list[bytes], list[str]]:
    """(topic, record) pairs as four column arrays, for one INSERT ... SELECT FROM unnest(...)."""
    return (
        [topic for topic, _ in entries],
        [r.key for _, r in entries],
        [r.value for _, r in entries],
        [orjson.dumps([[k, v.decode()] for k, v in r.headers]).decode() for _, r in entries],
    )


async def add_to_outbox(conn: Connection, entries: Sequence[tuple[str, Record]]) -> None:
    """Queue (topic, record) pairs for publication inside the caller's transaction, in their order."""
    if not entries:
        return
    await conn.execute(
        f"INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT t, k, v, h"  # noqa: S608 - constants only
        " FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[]) WITH ORDINALITY AS r(t, k, v, h, n)"
        " ORDER BY n",
        *outbox_arrays(entries),
    )


# Deletes what the broker acknowledged and claims the next rows, in one round trip, and never waits for a lock:
# rows come back as claimed (with their topic) or deleted (topic NULL). RETURNING has no order: the relay sorts by
# id. Every lock it takes skips a locked row, because another relay's claim may hold one of ours: a claim running
# while a row it saw unclaimed is claimed and committed by another relay locks that row's new version, finds it
# claimed and leaves it, but keeps the lock to the end of its statement (PostgreSQL releases no row lock early).
# A delete that waited for it waited for the other relay's claim, and that claim's own delete could wait for ours
# (a deadlock, which PostgreSQL breaks only after deadlock_timeout): with two relays on one outbox (two instances of
# a service on one database) the capacity probe saw claims waiting for claims, 0.8-0.9 backends waiting on average,
# in 2 of 4 drains (docs/capacity.md, step 3). A row the delete skips stays claimed by this relay, which deletes it
# with its next claim.
_CLAIM = (
    "WITH published AS (DELETE FROM outbox WHERE id IN"
    " (SELECT id FROM outbox WHERE id = ANY($2::bigint[]) FOR UPDATE SKIP LOCKED) RETURNING id),"
    " next AS MATERIALIZED"
    " (SELECT id FROM outbox WHERE claimed_by IS NULL AND refusals = 0 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED),"
    " claimed AS (UPDATE outbox o SET claimed_by = pg_backend_pid(), claimed_session = $3"
    " FROM next WHERE o.id = next.id"
    " RETURNING o.id, o.topic, o.key, o.value, o.headers)"
    " SELECT id, topic, key, value, headers FROM claimed UNION ALL SELECT id, NULL, NULL, NULL, NULL FROM published"
)
# On the way out a relay may wait: it deletes every acknowledged row, then gives back the rest of its claims.
_DELETE = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
# A claim is a session's, named by its pid and its start: a pid alone repeats after PostgreSQL restarts. The start is
# read once per session (_SESSION_START) and passed to each claim: read inside the claim, pg_stat_activity's snapshot
# of every backend cost each claim about 50 us of the server's time (EXPLAIN ANALYZE 0.064 ms against 0.013 ms).
_SESSION_START = "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
_RELEASE_ORPHANS = (
    "WITH live AS MATERIALIZED (SELECT pid, backend_start FROM pg_stat_activity WHERE pid IS NOT NULL)"
    " UPDATE outbox o SET claimed_by = NULL, claimed_session = NULL WHERE o.claimed_by IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM live WHERE live.pid = o.claimed_by"
    " AND (o.claimed_session IS NULL OR live.backend_start = o.claimed_session))"
)
_RELEASE_MINE = "UPDATE outbox SET claimed_by = NULL, claimed_session = NULL WHERE claimed_by = pg_backend_pid()"
# Rows of this session the broker did not take, given back; those it refused for what they are counted (refusals) and
# due again after their pause: the claim of batches takes none of them any more, they go alone (_CLAIM_REFUSED).
_GIVE_BACK = (
    "UPDATE outbox o SET claimed_by = NULL, claimed_session = NULL,"
    " refusals = o.refusals + CASE WHEN r.reason IS NULL THEN 0 ELSE 1 END,"
    " refused_reason = coalesce(r.reason, o.refused_reason),"
    " retry_at = CASE WHEN r.reason IS NULL THEN o.retry_at ELSE now() + make_interval(secs => r.pause) END"
    " FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS r(id, reason, pause) WHERE o.id = r.id"
    " RETURNING o.id, o.refusals"
)
_CLAIM_REFUSED = (
    "UPDATE outbox o SET claimed_by = pg_backend_pid(), claimed_session = $2 FROM (SELECT id FROM outbox"
    " WHERE refusals > 0"
    " AND claimed_by IS NULL AND retry_at <= now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) due"
    " WHERE o.id = due.id RETURNING o.id, o.topic, o.key, o.value, o.headers, o.refusals"
)
_SOURCE = "outbox relay"
_WAIT = BackoffPolicy(initial_s=0.2, cap_s=5.0)

STATEMENT_TIMEOUT_S = 15.0
"""The longest a relay statement waits for PostgreSQL: each is short (a claim took 2-4 s at worst, planned badly under
a backlog, docs/capacity.md). One with no answer means the database host vanished without a reset: the connection is
closed and the relay goes on with a new one (two such connections in a pool cost 30 s, not 15 minutes)."""
REFUSED_PAUSE_CAP_S = 30.0
"""The longest pause between two attempts of a row set aside (refused alone for good): from the poll interval, doubling
with each refusal. It goes out within that much of the broker side being fixed."""
REFUSED_PER_ROUND = 100
"""The most rows sent alone per poll (the rows of a refused batch, most of them taken at once)."""
ALONE_TIMEOUT_S = 30.0
"""How long a row sent alone may wait for the broker (the relay waits for it before anything else)."""
REFUSED_FOR_GOOD = (*TOO_LARGE, kafka_errors.CorruptRecordException, kafka_errors.InvalidTimestampError)
"""What the broker says of a record it will refuse whatever is sent with it, and however often: the row's own fault.
Not a topic's authorization: that is fixed by an ACL for every row of the topic, which are retried, never set aside."""
_SPOILT_CONNECTION = (asyncpg.exceptions._base.InternalClientError, TimeoutError)
"""A statement that got no answer (the host vanished), or a driver that lost track of its session: the connection
cannot be used again."""


def _count_set_aside(metrics: OutboxMetrics) -> None:
    """A row set aside counts in credited_dead_letters_total as group "outbox", kind "rejected" (the broker's
    verdict), where the dead-letter alerts already look."""
    service = metrics._m  # the service's metrics: OutboxMetrics has no counter of set-aside rows of its own
    service.dead_letters.labels(service.service, "outbox", DeadLetterKind.REJECTED.value).inc()


def _entry(row: asyncpg.Record) -> tuple[str, Record]:
    """A claimed row as the (topic, record) it publishes."""
    headers = [(k, v.encode()) for k, v in orjson.loads(row["headers"])]
    return row["topic"], Record(key=row["key"], value=row["value"], headers=headers)


def _failure(future: "asyncio.Future[Any]") -> BaseException | None:
    """Why the broker did not take a row whose send is done (None: it did)."""
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception()


@dataclass
class _InFlight:
    ids: list[int]
    sends: "list[asyncio.Future[Any]]"
    """One per row: done once the broker acknowledged it or failed with why not."""
    acks: "asyncio.Future[list[Any]]"
    """Done once every row's send is."""
    sent_at: float


@dataclass
class _Outcomes:
    """What became of the rows of the batches the broker answered."""

    acked: list[int] = field(default_factory=list)
    back: list[int] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)
    """Per row given back: why the broker refused it for good, or None (its producer's fault: sent again)."""
    error: BaseException | None = None
    """The first failure that is neither the row's nor its producer's (a topic it may not write, a broker away)."""

    def sort(self, batch: _InFlight) -> None:
        for row_id, send in zip(batch.ids, batch.sends, strict=True):
            if not send.done():
                continue  # given back with every other claim of the session
            exc = _failure(send)
            if exc is None:
                self.acked.append(row_id)
                continue
            refused = isinstance(exc, REFUSED_FOR_GOOD)
            self.back.append(row_id)
            self.reasons.append(f"{type(exc).__name__}: {exc}"[:500] if refused else None)
            if not refused and not producer_fault(exc) and self.error is None:
                self.error = exc


class OutboxRelay:
    """Publishes the outbox of one schema to Kafka, woken by `wake()` after a commit, polling as a fallback."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: KafkaPublisher,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        in_flight: int = 4,
        orphan_check_s: float = 2.0,
        metrics: OutboxMetrics | None = None,
        readiness: Readiness | None = None,
        backoff: BackoffPolicy = _WAIT,
        ack_overdue_s: float = 5.0,
        delete_after_s: float = 0.5,
    ) -> None:
        self._pool = pool
        self._delete_after_s = delete_after_s
        self._ack_overdue_s = ack_overdue_s
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._max_in_flight = in_flight
        self._orphan_check_s = orphan_check_s
        self._wakeup = asyncio.Event()
        self._metrics = metrics
        self._readiness = readiness or Readiness()
        self._backoff = backoff
        self._failures = 0
        self._session_start: datetime | None = None  # backend_start of the session claiming now (_SESSION_START)
        self.published_total = 0

    def wake(self) -> None:
        """Something was just committed to the outbox: publish without waiting for the poll."""
        self._wakeup.set()

    async def run(self) -> None:
        """Publish until cancelled. One database session at a time: its backend pid marks this relay's claims."""
        while True:
            try:
                async with self._pool.acquire() as conn:
                    try:
                        await self._session(conn)
                    except _SPOILT_CONNECTION:
                        conn.terminate()  # no answer, or the driver lost track of the session: never reuse it
                        raise
            except Exception as exc:  # noqa: BLE001 - _after raises again what is not the database's or the broker's
                await self._after(exc)

    async def _after(self, exc: Exception) -> None:
        """Wait out a failed session: the rows stay in the outbox, so nothing is lost while the database or the
        broker is away; the relay never stops the service for them. Anything else is a bug and is raised. A bare
        socket error is the database's: the broker's client wraps its own, and only _claim would mark a
        "network" away back, so a refused reconnect to a restarting PostgreSQL left the service unready for good."""
        verdict = classify(exc, dependency=Dependency.DATABASE)
        if verdict.dependency is None:
            raise exc
        self._failures += 1
        if verdict.transient:
            self._readiness.away(verdict.dependency, verdict.reason, _SOURCE)
            delay = self._backoff.delay(self._failures)
        else:
            delay = self._poll_interval_s
        log.warning("outbox relay could not publish (%s), retrying in %.1fs: %r", verdict.kind, delay, exc)
        await asyncio.sleep(delay)

    async def _session(self, conn: Connection) -> None:
        pending: deque[_InFlight] = deque()
        done: list[int] = []  # acknowledged, deleted by the next claim
        # Each claim planned for the outbox as it is now. The outbox is empty at rest, and a plan cached while it
        # was (PostgreSQL keeps a generic plan after five executions that cost no more) sorts a sequential scan of
        # the whole table for every claim and joins the claim back to it row by row: once a backlog formed, each
        # claim took 2-4 s (auto_explain, two ledger instances on one database), so the backlog only grew. A custom
        # plan costs a fraction of a millisecond per claim, and a claim moves a whole batch.
        await conn.execute("SET plan_cache_mode = force_custom_plan", timeout=STATEMENT_TIMEOUT_S)
        self._session_start = await conn.fetchval(_SESSION_START, timeout=STATEMENT_TIMEOUT_S)
        spoilt = False
        try:
            await self._pump(conn, pending, done)
        except _SPOILT_CONNECTION:
            spoilt = True  # nothing more goes over it: its claims are given back once its session is gone
            raise
        finally:
            if spoilt:
                for batch in pending:
                    batch.acks.cancel()
            else:
                await self._settle(conn, pending, done)
                with contextlib.suppress(Exception):  # a broken session is closed by the pool, the setting with it
                    await conn.execute("RESET plan_cache_mode", timeout=STATEMENT_TIMEOUT_S)

    async def _pump(self, conn: Connection, pending: "deque[_InFlight]", done: list[int]) -> None:
        """Claim and send while fewer than `in_flight` batches wait for the broker, when a commit woke the relay or
        the poll interval passed; delete what the broker acknowledged with the next claim, or on its own once it
        waited `delete_after_s` (or filled a batch)."""
        checked = claimed = refused_checked = -math.inf  # all due at once
        while True:
            now = time.monotonic()
            if now - checked >= self._orphan_check_s:
                await conn.execute(_RELEASE_ORPHANS, timeout=STATEMENT_TIMEOUT_S)
                checked = now
            if now - refused_checked >= self._poll_interval_s:
                await self._send_refused(conn)
                refused_checked = now
            if not done:
                done_since = now
            outcomes = self._acknowledged(pending)
            done += outcomes.acked
            await self._give_back_refused(conn, outcomes)
            room = len(pending) < self._max_in_flight
            to_claim = room and (self._wakeup.is_set() or now - claimed >= self._poll_interval_s)
            to_delete = bool(done) and (len(done) >= self._batch_size or now - done_since >= self._delete_after_s)
            if to_claim or to_delete:
                if room:
                    self._wakeup.clear()  # a commit from here on wakes the next round
                rows, deleted = await self._claim(conn, done, self._batch_size if room else 0)
                done[:] = [i for i in done if i not in deleted]  # another relay's claim held them: next time
                if done:
                    done_since = now
                claimed = now
                if rows:
                    pending.append(await self._send(rows))
                    if len(rows) == self._batch_size:
                        continue
            deadline = self._poll_interval_s - (time.monotonic() - claimed)
            if done:
                deadline = min(deadline, self._delete_after_s - (time.monotonic() - done_since))
            await self._wait(pending, room, max(0.0, deadline))

    def _acknowledged(self, pending: "deque[_InFlight]") -> _Outcomes:
        """What became of the rows of the oldest batches the broker answered, in order."""
        outcomes = _Outcomes()
        while pending and pending[0].acks.done():
            outcomes.sort(pending.popleft())
        if outcomes.acked:
            self._failures = 0
            self._readiness.back(Dependency.BROKER, _SOURCE)
        return outcomes

    async def _give_back_refused(self, conn: Connection, outcomes: _Outcomes) -> None:
        """Give back the rows the broker did not take (the ones it refused for good marked to go alone), then raise
        a failure that is neither theirs nor their producer's: the session ends and waits (`_after`)."""
        if outcomes.back:
            refused = sum(reason is not None for reason in outcomes.reasons)
            if refused:
                log.warning(
                    "outbox relay: the broker refused %d rows for good in a batch (%s); each is sent alone next",
                    refused,
                    next(reason for reason in outcomes.reasons if reason is not None),
                )
            pauses = [0.0] * len(outcomes.back)
            await conn.fetch(_GIVE_BACK, outcomes.back, outcomes.reasons, pauses, timeout=STATEMENT_TIMEOUT_S)
        if outcomes.error is not None:
            raise outcomes.error

    async def _send_refused(self, conn: Connection) -> None:
        """Send each due row the broker refused for good alone: deleted once taken, otherwise due again after a
        growing pause (and reported the first time it is refused alone)."""
        rows = await conn.fetch(_CLAIM_REFUSED, REFUSED_PER_ROUND, self._session_start, timeout=STATEMENT_TIMEOUT_S)
        for row in sorted(rows, key=lambda row: row["id"]):
            await self._send_alone(conn, row)

    async def _send_alone(self, conn: Connection, row: asyncpg.Record) -> None:
        topic, record = _entry(row)
        try:
            await asyncio.wait_for(self._publisher.publish_many([(topic, record)]), ALONE_TIMEOUT_S)
        except REFUSED_FOR_GOOD as exc:
            pause = min(self._poll_interval_s * 2 ** (row["refusals"] - 1), REFUSED_PAUSE_CAP_S)
            reason = f"{type(exc).__name__}: {exc}"[:500]
            given = await conn.fetch(_GIVE_BACK, [row["id"]], [reason], [pause], timeout=STATEMENT_TIMEOUT_S)
            if given and given[0]["refusals"] == 2:
                await self._set_aside(conn, row, topic, record, reason)
            return
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.fetch(_GIVE_BACK, [row["id"]], [None], [0.0], timeout=STATEMENT_TIMEOUT_S)
            if isinstance(exc, TimeoutError):
                raise kafka_errors.KafkaTimeoutError(f"no acknowledgement in {ALONE_TIMEOUT_S:.0f}s") from None
            raise
        await conn.execute(_DELETE, [row["id"]], timeout=STATEMENT_TIMEOUT_S)
        self._count(1)
        if row["refusals"] > 1:
            log.warning("outbox row %d (topic %s) published, after %d refusals", row["id"], topic, row["refusals"])

    async def _set_aside(self, conn: Connection, row: asyncpg.Record, topic: str, record: Record, reason: str) -> None:
        """Report once a row refused for good even alone: an error log line, the dead-letter metric, and a dead
        letter that names the row (the row itself stays in the outbox, retried alone, its value with it)."""
        schema = await conn.fetchval("SELECT current_schema()", timeout=STATEMENT_TIMEOUT_S)
        key = record.key.decode(errors="replace")
        size = len(record.key) + len(record.value)
        log.error(
            "outbox row %d of %s (topic %s, key %s, %d bytes) is refused by the broker for good (%s): set aside,"
            " it holds back no other row and is sent alone again every %.0fs at most until the broker side is fixed",
            row["id"],
            schema,
            topic,
            key,
            size,
            reason,
            REFUSED_PAUSE_CAP_S,
            extra={"order_id": key},
        )
        if self._metrics is not None:
            _count_set_aside(self._metrics)
        letter = trimmed(
            Record(
                key=record.key,
                value=record.value,
                headers=[
                    *((k, v) for k, v in record.headers if not k.startswith("dlq_")),
                    ("dlq_reason", f"refused for good, set aside in the outbox: {reason}".encode()),
                    ("dlq_source", _SOURCE.encode()),
                    ("dlq_outbox_schema", str(schema).encode()),
                    ("dlq_outbox_id", str(row["id"]).encode()),
                    ("dlq_outbox_topic", topic.encode()),
                    ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
                ],
            )
        )
        dead_letters = Topic.DEAD_LETTER.qualified(self._publisher.topic_prefix)
        try:
            await asyncio.wait_for(self._publisher.publish_many([(dead_letters, letter)]), ALONE_TIMEOUT_S)
        except Exception:  # the row stays in the outbox whatever: the log line above says it all
            log.warning("could not send the dead letter of outbox row %d", row["id"], exc_info=True)

    async def _wait(self, pending: "deque[_InFlight]", room: bool, timeout_s: float) -> None:
        """Until the oldest batch is acknowledged, a commit wakes us (if there is room), or `timeout_s`."""
        waiters: list[asyncio.Future[Any]] = []
        if pending:
            waiters.append(pending[0].acks)
        wakeup = asyncio.ensure_future(self._wakeup.wait()) if room else None
        if wakeup is not None:
            waiters.append(wakeup)
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if wakeup is not None:
                wakeup.cancel()
        # A broker that went away mid-run refuses nothing: the client retries until its delivery timeout, so
        # the only sign is an acknowledgement that does not come. Not ready until it does (_acknowledged).
        if pending and not pending[0].acks.done():
            waited = time.monotonic() - pending[0].sent_at
            if waited > self._ack_overdue_s:
                self._readiness.away(Dependency.BROKER, f"no acknowledgement for {waited:.0f}s", _SOURCE)

    async def _claim(self, conn: Connection, acked: list[int], limit: int) -> tuple[list[asyncpg.Record], set[int]]:
        """Delete the acknowledged rows no other claim holds right now and claim up to `limit` unclaimed ones: the
        rows claimed, in id order, and the ids deleted."""
        rows = await conn.fetch(_CLAIM, limit, acked, self._session_start, timeout=STATEMENT_TIMEOUT_S)
        self._readiness.back(Dependency.DATABASE, _SOURCE)
        claimed = sorted((row for row in rows if row["topic"] is not None), key=lambda row: row["id"])
        deleted = {row["id"] for row in rows if row["topic"] is None}
        if not claimed:
            self._failures = 0  # nothing to send: the next failure starts its backoff afresh
        self._count(len(deleted))
        return claimed, deleted

    async def _send(self, rows: list[asyncpg.Record]) -> _InFlight:
        sends = await self._publisher.send_each([_entry(row) for row in rows])
        acks = asyncio.gather(*sends, return_exceptions=True)
        return _InFlight([row["id"] for row in rows], sends, acks, time.monotonic())

    async def _settle(self, conn: Connection, pending: "deque[_InFlight]", done: list[int]) -> None:
        """On the way out (stop or failure): wait a little for outstanding acknowledgements, delete the rows
        acknowledged and give back every other row this session claimed, so the connection goes back to the
        pool holding no claim. If that fails the connection is closed: its claims become orphans."""
        if pending:
            await asyncio.wait([b.acks for b in pending], timeout=5.0)
        outcomes = _Outcomes()
        for batch in pending:
            outcomes.sort(batch)
            batch.acks.cancel()
        pending.clear()
        await self._give_back(conn, done + outcomes.acked, outcomes)

    async def _give_back(self, conn: Connection, acked: list[int], outcomes: _Outcomes | None = None) -> None:
        try:
            await conn.execute(_DELETE, acked, timeout=STATEMENT_TIMEOUT_S)
            if outcomes is not None and outcomes.back:
                pauses = [0.0] * len(outcomes.back)
                await conn.fetch(_GIVE_BACK, outcomes.back, outcomes.reasons, pauses, timeout=STATEMENT_TIMEOUT_S)
            await conn.execute(_RELEASE_MINE, timeout=STATEMENT_TIMEOUT_S)
        except Exception as exc:
            # The database away (a failover) is expected here: one line; anything else keeps its traceback.
            away = classify(exc, dependency=Dependency.DATABASE).transient
            log.warning(
                "outbox relay could not give its claims back (%s); closing its session instead: they come back when"
                " their lease ends",
                f"{type(exc).__name__}: {exc}".splitlines()[0][:200],
                exc_info=not away,
            )
            # A connection the database dropped is released already: the pool closes it, and terminate() would
            # raise again (a second traceback for the same failover).
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()
            return
        self._count(len(acked))

    def _count(self, rows: int) -> None:
        if not rows:
            return
        self.published_total += rows
        if self._metrics is not None:
            self._metrics.published(rows)

    async def publish_batch(self) -> int:
        """Publish up to one batch of rows in id order and wait for the broker; how many left the outbox."""
        async with self._pool.acquire() as conn:
            await conn.execute(_RELEASE_ORPHANS, timeout=STATEMENT_TIMEOUT_S)
            self._session_start = await conn.fetchval(_SESSION_START, timeout=STATEMENT_TIMEOUT_S)
            rows, _ = await self._claim(conn, [], self._batch_size)
            outcomes = _Outcomes()
            failures: list[BaseException | None] = []
            try:
                if rows:
                    batch = await self._send(rows)
                    await batch.acks
                    outcomes.sort(batch)
                    failures = [_failure(send) for send in batch.sends]
            finally:
                await self._give_back(conn, outcomes.acked, outcomes)
            first = next((exc for exc in failures if exc is not None), None)
            if first is not None:
                raise first  # its rows given back: the next start, or the relay, sends them
        return len(rows)

    async def backlog(self) -> tuple[int, float]:
        """(rows waiting, age in seconds of the oldest), for metrics."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age FROM outbox"
            )
        assert row is not None
        return int(row["n"]), float(row["age"])

    async def observe_backlog(self) -> None:
        """Publish the backlog and the oldest row's age to the metrics (called periodically)."""
        if self._metrics is not None:
            self._metrics.backlog(*await self.backlog())
