"""A record as large as the broker takes, which the reconciler cannot decode, goes to the dead-letter topic trimmed
(its value dropped, the letter's size noted), as the other services' letters are: with the dead-letter headers added
it no longer fits a produce request, and the worker (a real process on the session's broker) goes on with the records
after it."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from contracts.codec import Record
from contracts.events import OrderStatus, OrderStatusChanged
from contracts.topics import Topic
from tests.conftest import Broker
from tests.kafka_reader import read_until
from tests.reconciler.integration.test_retention_after_restart import STARTUP_S, credit, messages, payment, ready, write
from tests.reconciler.integration.worker_process import worker_process

ALMOST_A_MEBIBYTE = 1_000_000


async def test_an_undecodable_record_too_large_to_letter_whole_is_lettered_trimmed_and_the_next_order_is_credited(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    prefix, bad, good = f"{isolation}.", f"ord_{isolation}_bad", f"ord_{isolation}_good"
    payments, credits = Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_EVENTS.qualified(prefix)
    huge = Record(bad.encode(), b"{" + b"x" * ALMOST_A_MEBIBYTE, [])
    with worker_process(broker.bootstrap, broker.kind, database_url, isolation, tmp_path) as worker:
        await ready(worker)
        now = datetime.now(UTC)
        await write(broker.bootstrap, (payments, huge), (payments, payment(good, now)))
        await write(broker.bootstrap, (credits, credit(good, now + timedelta(milliseconds=1))))
        told = lambda rs: any(isinstance(m, OrderStatusChanged) and m.order_id == good for m in messages(rs))  # noqa: E731
        status = Topic.ORDERS_STATUS.qualified(prefix)
        statuses = messages(await read_until(broker.bootstrap, status, told, timeout_s=STARTUP_S))
        assert [(m.order_id, m.status) for m in statuses if isinstance(m, OrderStatusChanged)] == [
            (good, OrderStatus.CREDITED)
        ]
        lettered = lambda rs: any(r.key == bad.encode() for r in rs)  # noqa: E731
        letters = await read_until(broker.bootstrap, Topic.DEAD_LETTER.qualified(prefix), lettered, timeout_s=30)
        [letter] = [r for r in letters if r.key == bad.encode()]
        headers = dict(letter.headers)
        assert headers["dlq_reason"].startswith(b"undecodable")
        assert letter.value == b""
        assert int(headers["dlq_truncated"]) > len(huge.value)
        assert worker.alive(), worker.tail()
