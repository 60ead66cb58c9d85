"""Orders on PostgreSQL outside the unit of work: new orders placed in one statement, statuses followed
a poll at a time, an order read in one query."""

import functools
from collections.abc import Callable, Collection, Sequence

import asyncpg

from contracts.codec import Envelope, encode, envelope_for
from contracts.topics import Topic
from payments.adapters.order_rows import COLUMNS, ORDER_TYPES, columns, order_of, order_row, params
from payments.cases import RESOLVING_STATUSES, SERVICE_ACTOR, SETTLED_BY_STATUS
from payments.domain import Order
from payments.ports import Announcement, KeyHolder, NewOrder, StatusChange
from servicekit.outbox import OUTBOX_COLUMNS, outbox_arrays

_SETTLED_KINDS = sorted(SETTLED_BY_STATUS)
_QUERY_TYPES = ("text", "text", "text", "timestamptz", "timestamptz")

# One statement, so one round trip and its own transaction: keys are claimed in key order (two groups
# claiming the same keys take them in the same order; for one key twice in a group the first request wins),
# an order is inserted only if its key was claimed (or it has none) and its id is new (a request handled again
# after its group failed past the commit finds its order placed), and only an inserted order's announcement
# reaches the outbox, in the orders' order, and only its payment query the schedule.
_PLACE = (
    f"WITH req AS (SELECT * FROM unnest({params(1, (*ORDER_TYPES, 'text', 'text', 'text'))})"  # noqa: S608
    f" WITH ORDINALITY AS r({COLUMNS}, key, fingerprint, owner, n)),"
    " claimed AS (INSERT INTO idempotency_keys (key, request_fingerprint, order_id, owner)"
    " SELECT key, fingerprint, order_id, owner FROM req WHERE key IS NOT NULL ORDER BY key, n"
    " ON CONFLICT (key) DO NOTHING RETURNING order_id),"
    f" placed AS (INSERT INTO orders ({COLUMNS}) SELECT {COLUMNS} FROM req"
    " WHERE key IS NULL OR order_id IN (SELECT order_id FROM claimed) ORDER BY n"
    " ON CONFLICT (order_id) DO NOTHING RETURNING order_id),"
    f" announced AS (INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT t, k, v, h"
    f" FROM unnest({params(len(ORDER_TYPES) + 4, ('text', 'bytea', 'bytea', 'jsonb', 'text'))}) WITH ORDINALITY AS"
    " e(t, k, v, h, owner, n) WHERE owner IN (SELECT order_id FROM placed) ORDER BY n),"
    " scheduled AS (INSERT INTO payment_queries (order_id, provider, channel, due_at, expires_at)"
    f" SELECT q, p, c, d, x FROM unnest({params(len(ORDER_TYPES) + 9, _QUERY_TYPES)}) AS s(q, p, c, d, x)"
    " WHERE q IN (SELECT order_id FROM placed))"
    " SELECT order_id FROM placed"
)
_HOLDERS = "SELECT key, request_fingerprint, order_id, owner FROM idempotency_keys WHERE key = ANY($1::text[])"


def _holder(new: NewOrder, placed: set[str], holders: dict[str, KeyHolder]) -> KeyHolder | None:
    """None for an order inserted now; else its key's holder, or (without a key) the order itself, placed before."""
    if new.order.order_id in placed:
        return None
    if new.key is None:
        return KeyHolder(new.fingerprint, new.order.order_id, new.owner)
    return holders[new.key]


@functools.cache  # once per event otherwise, and the enum's value lookup is what costs
def _qualified(topic: Topic, prefix: str) -> str:
    return topic.qualified(prefix)


class PostgresOrderBook:
    """New orders, their idempotency keys and their OrderPlaced events, written in one statement per group."""

    def __init__(self, pool: asyncpg.Pool, *, producer: str, topic_prefix: str, on_commit: Callable[[], None]) -> None:
        self._pool = pool
        self._producer = producer
        self._topic_prefix = topic_prefix
        self._on_commit = on_commit

    async def place(self, orders: Sequence[NewOrder], announcements: Sequence[Announcement]) -> list[KeyHolder | None]:
        """None for each order inserted now, else what its key (or its own id) held before; in the orders' order.

        The holders are read after the placing statement's commit: a key it found held but past its keep time can be
        deleted by the retention in between (servicekit.retention). Such a key is free, so its request is a new one
        and is placed again, as it would have been a moment later, instead of failing for a holder that is gone."""
        assert len(announcements) == len(orders)  # one announcement per order, in the orders' order
        rows = [(*order_row(n.order), n.key, n.fingerprint, n.owner) for n in orders]
        records = [(a.topic.qualified(self._topic_prefix), encode(a.message, self._envelope(a))) for a in announcements]
        owners = [n.order.order_id for n in orders]
        queries = [n.query for n in orders if n.query is not None]
        scheduled = columns([(q.order_id, q.provider, q.channel, q.due_at, q.expires_at) for q in queries], 5)
        arrays = [*columns(rows, len(ORDER_TYPES) + 3), *outbox_arrays(records), owners, *scheduled]
        placed = {r["order_id"] for r in await self._pool.fetch(_PLACE, *arrays)}
        if placed:
            self._on_commit()
        lost = [n.key for n in orders if n.order.order_id not in placed and n.key is not None]
        holders = {}
        if lost:
            held = await self._pool.fetch(_HOLDERS, lost)
            holders = {r["key"]: KeyHolder(r["request_fingerprint"], r["order_id"], r["owner"]) for r in held}
        freed = [
            i
            for i, n in enumerate(orders)
            if n.order.order_id not in placed and n.key is not None and n.key not in holders
        ]
        again_at = set(freed)
        answers = [None if i in again_at else _holder(n, placed, holders) for i, n in enumerate(orders)]
        if freed:
            again = await self.place([orders[i] for i in freed], [announcements[i] for i in freed])
            for i, holder in zip(freed, again, strict=True):
                answers[i] = holder
        return answers

    def _envelope(self, announcement: Announcement) -> Envelope:
        return envelope_for(announcement.message, producer=self._producer, event_id=announcement.event_id)

    async def find_many(self, order_ids: Collection[str]) -> dict[str, Order]:
        if not order_ids:
            return {}
        query = f"SELECT {COLUMNS} FROM orders WHERE order_id = ANY($1::text[])"  # noqa: S608 - constants only
        return {row["order_id"]: order_of(row) for row in await self._pool.fetch(query, list(order_ids))}


class PostgresStatusBook:
    """Order statuses on PostgreSQL: a consumer's poll of changes in one statement (one per round when an order
    changes twice in it), outside any consumer transaction (a change is idempotent by its sequence, so it needs
    no record of the event, and it is durable before the offset commit)."""

    # Rows are locked in order id order, as every statement that locks several orders takes them (no deadlock
    # with a group of callbacks). A status that settles the order also resolves its open support cases (of the
    # kinds a status settles), in the same statement: actor `credited`, the resolution naming the status and
    # the order's last support action.
    _APPLY = (
        "WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) AS i(order_id, status, seq)),"
        " locked AS MATERIALIZED (SELECT o.order_id FROM orders o JOIN input i ON i.order_id = o.order_id"
        " WHERE o.status_sequence < i.seq ORDER BY o.order_id FOR UPDATE OF o),"
        " changed AS (UPDATE orders o SET status = i.status, status_sequence = i.seq, updated_at = now()"
        " FROM input i WHERE o.order_id = i.order_id AND o.order_id IN (SELECT order_id FROM locked)"
        " AND o.status_sequence < i.seq RETURNING o.order_id, i.status),"
        " resolved AS (UPDATE support_cases c SET resolved_at = now(), resolved_by = $5,"
        " resolution = s.status || coalesce((SELECT ' after ' || a.action || ' by ' || a.actor_name || ': '"
        " || a.reason FROM support_actions a WHERE a.order_id = c.order_id ORDER BY a.id DESC LIMIT 1), '')"
        " FROM changed s WHERE c.order_id = s.order_id AND s.status = ANY($4::text[]) AND c.resolved_at IS NULL"
        " AND c.kind = ANY($6::text[]) RETURNING c.id, c.resolved_at, c.resolution),"
        " history AS (INSERT INTO support_case_history (case_id, at, actor, action, detail)"
        " SELECT id, resolved_at, $5, 'resolved', resolution FROM resolved)"
        " SELECT i.order_id, EXISTS (SELECT 1 FROM orders o WHERE o.order_id = i.order_id) AS known,"
        " i.order_id IN (SELECT order_id FROM changed) AS applied FROM input i"
    )

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def apply(self, changes: Sequence[StatusChange]) -> list[bool | None]:
        results: list[bool | None] = [None] * len(changes)
        for round_ in _rounds(changes):
            rows = await self._pool.fetch(
                self._APPLY,
                [changes[i].order_id for i in round_],
                [changes[i].status for i in round_],
                [changes[i].sequence for i in round_],
                sorted(RESOLVING_STATUSES),
                SERVICE_ACTOR,
                _SETTLED_KINDS,
            )
            found = {row["order_id"]: bool(row["applied"]) if row["known"] else None for row in rows}
            for i in round_:
                results[i] = found[changes[i].order_id]
        return results


def _rounds(changes: Sequence[StatusChange]) -> list[list[int]]:
    """The changes' indexes in rounds with each order at most once, its changes in their order from round to
    round: one statement applies a round (an UPDATE moves a row once)."""
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}
    for i, change in enumerate(changes):
        n = seen.get(change.order_id, 0)
        seen[change.order_id] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    return rounds


async def read_order(pool: asyncpg.Pool, order_id: str) -> Order | None:
    """One order, read outside any transaction (one round trip)."""
    row = await pool.fetchrow(f"SELECT {COLUMNS} FROM orders WHERE order_id = $1", order_id)  # noqa: S608
    return None if row is None else order_of(row)
