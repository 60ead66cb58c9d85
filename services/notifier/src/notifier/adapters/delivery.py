"""DeliveryWorker: delivers queued notifications through every channel, with retries and a dead letter.

Rows are claimed with FOR UPDATE SKIP LOCKED, so two notifier instances never deliver one row at once;
a notifier killed mid-delivery leaves the row pending and the next run delivers it (the receiver may
see it twice and drops the repeat by X-Credited-Notification-Id).
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from contracts.codec import Record
from contracts.topics import Topic
from notifier.ports import DeliveryChannel, DeliveryFailed
from servicekit.kafka import KafkaPublisher

log = logging.getLogger(__name__)


class DeliveryWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: Sequence[DeliveryChannel],
        publisher: KafkaPublisher,
        *,
        max_attempts: int = 8,
        base_backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        batch_size: int = 200,
        poll_interval_s: float = 0.5,
    ) -> None:
        self._pool = pool
        self._channels = list(channels)
        self._publisher = publisher
        self._max_attempts = max_attempts
        self._base = base_backoff_s
        self._max = max_backoff_s
        self._batch_size = batch_size
        self._poll = poll_interval_s
        self._wakeup = asyncio.Event()
        self.delivered_total = 0
        self.failed_total = 0

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            try:
                handled = await self.deliver_due()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("delivery worker could not read the queue, will retry: %s", exc)
                handled = 0
                await asyncio.sleep(self._poll)
            if handled < self._batch_size:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._poll)

    async def deliver_due(self) -> int:
        """Attempt every due notification once; return how many were attempted."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT notification_id, order_id, payload, attempts FROM notifications"
                " WHERE state = 'pending' AND next_attempt_at <= now()"
                " ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch_size,
            )
            if not rows:
                return 0
            outcomes = await asyncio.gather(*(self._attempt(orjson.loads(r["payload"])) for r in rows))
            for row, failure in zip(rows, outcomes, strict=True):
                await self._settle(conn, row, failure)
        return len(rows)

    async def _attempt(self, payload: dict[str, Any]) -> DeliveryFailed | None:
        for channel in self._channels:
            try:
                await channel.deliver(payload)
            except DeliveryFailed as exc:
                return DeliveryFailed(f"{channel.name}: {exc.reason}", retry=exc.retry, retry_after_s=exc.retry_after_s)
        return None

    async def _settle(self, conn: PoolConnectionProxy, row: asyncpg.Record, failure: DeliveryFailed | None) -> None:
        attempts = row["attempts"] + 1
        if failure is None:
            await conn.execute(
                "UPDATE notifications SET state = 'delivered', attempts = $2, delivered_at = now(), last_error = NULL"
                " WHERE notification_id = $1",
                row["notification_id"],
                attempts,
            )
            self.delivered_total += 1
            return
        if failure.retry and attempts < self._max_attempts:
            delay = failure.retry_after_s if failure.retry_after_s is not None else self._backoff(attempts)
            await conn.execute(
                "UPDATE notifications SET attempts = $2, last_error = $3,"
                " next_attempt_at = now() + make_interval(secs => $4) WHERE notification_id = $1",
                row["notification_id"],
                attempts,
                failure.reason,
                delay,
            )
            log.warning(
                "notification %s for order %s failed (%s), retry in %.1fs",
                row["notification_id"],
                row["order_id"],
                failure.reason,
                delay,
            )
            return
        await conn.execute(
            "UPDATE notifications SET state = 'failed', attempts = $2, last_error = $3 WHERE notification_id = $1",
            row["notification_id"],
            attempts,
            failure.reason,
        )
        self.failed_total += 1
        reason = f"notification undeliverable after {attempts} attempts: {failure.reason}"
        log.error("notification %s for order %s dead-lettered: %s", row["notification_id"], row["order_id"], reason)
        await self._publisher.publish(
            Topic.DEAD_LETTER.qualified(self._publisher.topic_prefix),
            Record(
                key=row["order_id"].encode(),
                value=row["payload"].encode() if isinstance(row["payload"], str) else bytes(row["payload"]),
                headers=[
                    ("dlq_reason", reason.encode()),
                    ("dlq_source", b"notifier.delivery"),
                    ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
                ],
            ),
        )

    def _backoff(self, attempts: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0, min(self._max, self._base * 2 ** (attempts - 1)))  # noqa: S311 - jitter, not crypto
