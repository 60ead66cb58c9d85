"""The sweeper of parked retries: a RetryCredit whose order still has no recorded payment after the park time is
dead-lettered (`no_payment_fact`), counted as rejected, and forgotten. A BlockCredit that waited with it for the
payment (domain.block_waits) is applied then: the order is blocked and the final CreditRejected a batch would have
published goes out with the dead letter, so the reconciler refunds an order whose payment the ledger never saw.

Each sweep is one transaction: it deletes the expired rows it could lock (FOR UPDATE SKIP LOCKED, so two ledger
instances never take one row, and a batch clearing the row with its payment is never waited for) and writes their
dead letters to the outbox, which the relay publishes. A row or its dead letter, never both, never neither.

A sweep first takes the same per-order locks a batch takes (`ledger_lock_orders`, in the same order, so the two
never deadlock) for the orders it is about to expire. Without them a batch recording the order's payment at that
moment could have written the payment but not yet deleted the row: the sweep would see no payment (not committed)
and dead-letter the retry of an order that the batch then credits. With them the sweep waits for that batch, and
its DELETE (a new snapshot) finds the row gone. A row whose order is paid by now all the same is deleted without
a dead letter.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson

from contracts.codec import Record, deterministic_id, encode, envelope_for
from contracts.events import CreditRejected
from ledger.domain import clip, standing_block
from servicekit.outbox import add_to_outbox

log = logging.getLogger(__name__)

# The orders whose parked retry has expired, oldest first: the ones this sweep locks (as a batch would) and expires.
_CANDIDATES = """
SELECT order_id FROM parked_retries WHERE first_seen < now() - make_interval(secs => $1) ORDER BY first_seen LIMIT $2
"""

# Of those, the rows still there and expired once their orders are locked, deleted, with whether the order is paid.
_EXPIRE = """
WITH expired AS (
    SELECT order_id FROM parked_retries
    WHERE order_id = ANY($2::text[]) AND first_seen < now() - make_interval(secs => $1)
    FOR UPDATE SKIP LOCKED
)
DELETE FROM parked_retries p USING expired WHERE p.order_id = expired.order_id
RETURNING p.order_id, p.event_id, p.retries, p.record_value, p.record_headers, p.block_user_id, p.block_reason,
          EXISTS (SELECT 1 FROM payment_facts f WHERE f.order_id = p.order_id) AS paid
"""


# The blocks the orders of the blocks that waited with expired retries hold already (the sweep holds their locks).
_HELD = "SELECT order_id, reason FROM credit_blocks WHERE order_id = ANY($1::text[])"

# Those blocks applied, each with the reason `domain.standing_block` chose against the block the order holds.
_BLOCK = """
INSERT INTO credit_blocks (order_id, reason) SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT (order_id) DO UPDATE SET reason = EXCLUDED.reason
"""


def headers_json(headers: Sequence[tuple[str, bytes]]) -> str:
    """A record's headers as the JSON kept in parked_retries.record_headers (the outbox's form)."""
    return orjson.dumps([[k, v.decode()] for k, v in headers]).decode()


def no_payment_reason(order_id: str, park_s: float) -> str:
    return f"no_payment_fact: no PaymentSucceeded for order {order_id} within {park_s:g} s"


@dataclass(frozen=True, slots=True)
class DeadLetterRoute:
    """Where a dead-lettered retry goes and what it says it came from (qualified topic and group names), and where
    the final CreditRejected of a block that waited with it goes, from which producer."""

    dead_letter_topic: str
    source_topic: str
    consumer_group: str
    events_topic: str
    producer: str


class ParkedRetrySweeper:
    """Every `interval_s`, dead-letters the retries parked longer than `park_s` whose order is still unpaid."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        route: DeadLetterRoute,
        *,
        park_s: float,
        interval_s: float,
        on_commit: Callable[[], None],
        rejected: Callable[[int], None] = lambda n: None,
        limit: int = 500,
    ) -> None:
        self._pool = pool
        self._route = route
        self.park_s = park_s
        self._interval_s = interval_s
        self._on_commit = on_commit
        self._rejected = rejected
        self._limit = limit

    async def run(self) -> None:
        """Sweep until cancelled; a sweep that fails (the database away) is tried again at the next tick."""
        while True:
            try:
                while len(await self.sweep()) >= self._limit:
                    pass
            except Exception as exc:  # noqa: BLE001 - nothing is lost: the rows stay for the next sweep
                log.warning("could not sweep the parked retries, will retry: %r", exc)
            await asyncio.sleep(self._interval_s)

    async def sweep(self) -> list[str]:
        """One sweep; the orders whose parked retry it dead-lettered."""
        now = datetime.now(UTC).isoformat().encode()
        letters: list[tuple[str, Record]] = []
        async with self._pool.acquire() as conn, conn.transaction():
            candidates = [row["order_id"] for row in await conn.fetch(_CANDIDATES, self.park_s, self._limit)]
            if not candidates:
                return []
            await conn.execute("SELECT ledger_lock_orders($1::text[])", candidates)
            rows = await conn.fetch(_EXPIRE, self.park_s, candidates)
            blocks: list[asyncpg.Record] = []
            for row in rows:
                if row["paid"]:
                    log.info("order %s: parked retry dropped, its payment is recorded", row["order_id"])
                    continue
                letters.append((self._route.dead_letter_topic, self._letter(row, now)))
                if row["block_reason"] is not None:
                    blocks.append(row)
                    letters.append((self._route.events_topic, self._block_answer(row)))
            if blocks:
                # Unpaid means never credited (every credit since 0007 records its payment, which clears the row).
                orders = [r["order_id"] for r in blocks]
                held = {r["order_id"]: r["reason"] for r in await conn.fetch(_HELD, orders)}
                reasons = [standing_block(held.get(r["order_id"]), r["block_reason"]) for r in blocks]
                await conn.execute(_BLOCK, orders, reasons)
            await add_to_outbox(conn, letters)
        dead = [row["order_id"] for row in rows if not row["paid"]]
        for row in rows:
            if not row["paid"]:
                log.error(
                    "dead-lettering the parked retry of order %s (event %s, %d retries): %s",
                    row["order_id"],
                    row["event_id"],
                    row["retries"],
                    no_payment_reason(row["order_id"], self.park_s),
                )
                if row["block_reason"] is not None:
                    log.warning(
                        "order %s blocked from crediting: %s (no payment within %g s)",
                        row["order_id"],
                        row["block_reason"],
                        self.park_s,
                    )
        if dead:
            self._on_commit()
            self._rejected(len(dead))
        return dead

    def _block_answer(self, row: asyncpg.Record) -> Record:
        """The final CreditRejected a block applied in a batch would have published, with the same event id."""
        order_id = row["order_id"]
        message = CreditRejected(
            order_id=order_id,
            user_id=row["block_user_id"],
            # Clipped as a batch clips it: a block's reason may fill the contract's limit on its own, and a message
            # that does not validate would roll back every sweep, so no parked retry would ever expire again.
            reason=clip(f"blocked: {row['block_reason']}"),
            final=True,
            rejected_at=datetime.now(UTC),
        )
        event_id = deterministic_id("CreditRejected", order_id, "block")
        return encode(message, envelope_for(message, producer=self._route.producer, event_id=event_id))

    def _letter(self, row: asyncpg.Record, failed_at: bytes) -> Record:
        kept = [(k, v.encode()) for k, v in orjson.loads(row["record_headers"]) if not k.startswith("dlq_")]
        kept += [
            ("dlq_reason", no_payment_reason(row["order_id"], self.park_s).encode()),
            ("dlq_source_topic", self._route.source_topic.encode()),
            ("dlq_consumer_group", self._route.consumer_group.encode()),
            ("dlq_failed_at", failed_at),
            ("dlq_parked_retries", str(row["retries"]).encode()),
        ]
        return Record(key=row["order_id"].encode(), value=row["record_value"], headers=kept)
