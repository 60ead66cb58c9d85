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
whose relay died (or lost its database session) before deleting them. A batch the broker refused is given back the
same way and published again, possibly after rows claimed later (consumers tolerate that order: every message may
arrive late).
"""

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from contracts.codec import Record
from servicekit.errors import Dependency, classify
from servicekit.kafka import KafkaPublisher
from servicekit.metrics import OutboxMetrics
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
    " (SELECT id FROM outbox WHERE claimed_by IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED),"
    " claimed AS (UPDATE outbox o SET claimed_by = pg_backend_pid(), claimed_session = (SELECT backend_start"
    " FROM pg_stat_activity WHERE pid = pg_backend_pid()) FROM next WHERE o.id = next.id"
    " RETURNING o.id, o.topic, o.key, o.value, o.headers)"
    " SELECT id, topic, key, value, headers FROM claimed UNION ALL SELECT id, NULL, NULL, NULL, NULL FROM published"
)
# On the way out a relay may wait: it deletes every acknowledged row, then gives back the rest of its claims.
_DELETE = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
# A claim is a session's, named by its pid and its start: a pid alone repeats after PostgreSQL restarts.
_RELEASE_ORPHANS = (
    "WITH live AS MATERIALIZED (SELECT pid, backend_start FROM pg_stat_activity WHERE pid IS NOT NULL)"
    " UPDATE outbox o SET claimed_by = NULL, claimed_session = NULL WHERE o.claimed_by IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM live WHERE live.pid = o.claimed_by"
    " AND (o.claimed_session IS NULL OR live.backend_start = o.claimed_session))"
)
_RELEASE_MINE = "UPDATE outbox SET claimed_by = NULL, claimed_session = NULL WHERE claimed_by = pg_backend_pid()"
_SOURCE = "outbox relay"
_WAIT = BackoffPolicy(initial_s=0.2, cap_s=5.0)


def _succeeded(acks: "asyncio.Future[object]") -> bool:
    return acks.done() and not acks.cancelled() and acks.exception() is None


@dataclass
class _InFlight:
    ids: list[int]
    acks: "asyncio.Future[object]"
    sent_at: float


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
                    except asyncpg.exceptions._base.InternalClientError:
                        conn.terminate()  # the session ended mid-operation and the driver lost track: never reuse it
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
        await conn.execute("SET plan_cache_mode = force_custom_plan")
        try:
            await self._pump(conn, pending, done)
        finally:
            await self._settle(conn, pending, done)
            with contextlib.suppress(Exception):  # a broken session is closed by the pool, the setting with it
                await conn.execute("RESET plan_cache_mode")

    async def _pump(self, conn: Connection, pending: "deque[_InFlight]", done: list[int]) -> None:
        """Claim and send while fewer than `in_flight` batches wait for the broker, when a commit woke the relay or
        the poll interval passed; delete what the broker acknowledged with the next claim, or on its own once it
        waited `delete_after_s` (or filled a batch)."""
        checked = claimed = -math.inf  # both due at once
        while True:
            now = time.monotonic()
            if now - checked >= self._orphan_check_s:
                await conn.execute(_RELEASE_ORPHANS)
                checked = now
            if not done:
                done_since = now
            done += self._acknowledged(pending)
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

    def _acknowledged(self, pending: "deque[_InFlight]") -> list[int]:
        """The ids of the oldest batches the broker acknowledged, in order; raises the error of one it refused."""
        ids: list[int] = []
        while pending and pending[0].acks.done():
            batch = pending[0]
            batch.acks.result()  # a refusal: _settle gives its rows back
            pending.popleft()
            ids += batch.ids
        if ids:
            self._failures = 0
            self._readiness.back(Dependency.BROKER, _SOURCE)
        return ids

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
        rows = await conn.fetch(_CLAIM, limit, acked)
        self._readiness.back(Dependency.DATABASE, _SOURCE)
        claimed = sorted((row for row in rows if row["topic"] is not None), key=lambda row: row["id"])
        deleted = {row["id"] for row in rows if row["topic"] is None}
        if not claimed:
            self._failures = 0  # nothing to send: the next failure starts its backoff afresh
        self._count(len(deleted))
        return claimed, deleted

    async def _send(self, rows: list[asyncpg.Record]) -> _InFlight:
        entries = [
            (
                row["topic"],
                Record(
                    key=row["key"],
                    value=row["value"],
                    headers=[(k, v.encode()) for k, v in orjson.loads(row["headers"])],
                ),
            )
            for row in rows
        ]
        acks = await self._publisher.send_many(entries)
        return _InFlight([row["id"] for row in rows], asyncio.ensure_future(acks), time.monotonic())

    async def _settle(self, conn: Connection, pending: "deque[_InFlight]", done: list[int]) -> None:
        """On the way out (stop or failure): wait a little for outstanding acknowledgements, delete the rows
        acknowledged and give back every other row this session claimed, so the connection goes back to the
        pool holding no claim. If that fails the connection is closed: its claims become orphans."""
        if pending:
            await asyncio.wait([b.acks for b in pending], timeout=5.0)
        acked = done + [
            i for b in pending if b.acks.done() and not b.acks.cancelled() and not b.acks.exception() for i in b.ids
        ]
        for batch in pending:
            batch.acks.cancel()
        pending.clear()
        await self._give_back(conn, acked)

    async def _give_back(self, conn: Connection, acked: list[int]) -> None:
        try:
            await conn.execute(_DELETE, acked)
            await conn.execute(_RELEASE_MINE)
        except Exception:
            log.warning("outbox relay could not give its claims back; closing its session instead", exc_info=True)
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
            await conn.execute(_RELEASE_ORPHANS)
            rows, _ = await self._claim(conn, [], self._batch_size)
            acked: list[int] = []
            try:
                if rows:
                    batch = await self._send(rows)
                    await batch.acks
                    acked = batch.ids
            finally:
                await self._give_back(conn, acked)
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
