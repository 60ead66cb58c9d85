"""Dead letters of one order replayed in the order they were written, against the real broker: a consumer
dead-letters every record of a poll with one `dlq_failed_at`, so letters of one order can share it, and their ids
(`<partition>@<offset>`) then decide which goes back first."""

from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from contracts.base import Message
from contracts.codec import encode, envelope_for
from contracts.events import RefundSucceeded
from contracts.topics import Topic
from credited.deadletters import REPLAY_MARKER
from servicekit.kafka import ensure_topics
from tests.conftest import Broker
from tests.kafka_reader import event_types, eventually, read_all
from tests.servicekit.events import paid
from tests.stack.dlq_cli import run_dlq

Headers = list[tuple[str, bytes]]


class Site:
    def __init__(self, broker: Broker, prefix: str) -> None:
        self.broker, self.prefix = broker, prefix
        self.source, self.dead = Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.DEAD_LETTER.qualified(prefix)

    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> int:
        """Sent to partition 0 of `topic`; its offset."""
        producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap)
        await producer.start()
        try:
            return (await producer.send_and_wait(topic, value, key=key, headers=headers, partition=0)).offset
        finally:
            await producer.stop()

    async def dead_lettered(self, message: Message, event_id: str, failed_at: bytes) -> int:
        """`message` on payments.events, and its dead letter as the ledger's consumer writes it; the letter's offset."""
        record = encode(message, envelope_for(message, producer="payments", event_id=event_id))
        headers = [(k, v or b"") for k, v in record.headers]
        offset = await self.send(self.source, record.key, record.value, headers)
        letter = [
            *headers,
            ("dlq_reason", b"undecodable: unknown schema version"),
            ("dlq_source_topic", self.source.encode()),
            ("dlq_source_partition", b"0"),
            ("dlq_source_offset", str(offset).encode()),
            ("dlq_consumer_group", f"{self.prefix}ledger.payments".encode()),
            ("dlq_failed_at", failed_at),
        ]
        return await self.send(self.dead, record.key, record.value, letter)


@pytest.fixture
async def site(broker: Broker, isolation: str) -> Site:
    prefix = f"{isolation}."
    await ensure_topics(
        broker.bootstrap, [Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.DEAD_LETTER.qualified(prefix)], 3
    )
    return Site(broker, prefix)


async def test_an_orders_payment_and_refund_dead_lettered_in_one_poll_are_replayed_payment_first(site: Site) -> None:
    # Nine older letters no consumer read (the notifier's), so the order's two land at offsets 9 and 10.
    for n in range(9):
        earlier = [("dlq_source", b"notifier.delivery"), ("dlq_failed_at", b"2026-01-01T00:00:00+00:00")]
        await site.send(site.dead, f"ord_other_{n}".encode(), b"{}", earlier)
    one_poll = datetime.now(UTC).isoformat().encode()
    payment = paid("ord_1")
    refund = RefundSucceeded(
        order_id="ord_1", user_id="u1", amount=100, currency="CNY", refund_id="rf-1", refunded_at=datetime.now(UTC)
    )
    at = [
        await site.dead_lettered(payment, "pay-ord_1", one_poll),
        await site.dead_lettered(refund, "rf-ord_1", one_poll),
    ]
    assert at == [9, 10]

    code, out = await run_dlq(site.broker, site.prefix, "replay", "--group", "ledger.payments")

    assert code == 0, out

    async def both_replayed() -> bool:
        records = await read_all(site.broker.bootstrap, site.source)
        return len([r for r in records if any(k == REPLAY_MARKER for k, _ in r.headers)]) == 2

    await eventually(both_replayed, timeout_s=30, interval_s=0.3)
    replayed = [
        r for r in await read_all(site.broker.bootstrap, site.source) if any(k == REPLAY_MARKER for k, _ in r.headers)
    ]
    assert event_types(replayed) == ["PaymentSucceeded", "RefundSucceeded"], out


async def test_an_id_named_that_is_no_dead_letter_is_said_and_fails_the_replay_while_the_others_go(site: Site) -> None:
    at = await site.dead_lettered(paid("ord_2"), "pay-ord_2", datetime.now(UTC).isoformat().encode())

    code, out = await run_dlq(site.broker, site.prefix, "replay", f"0@{at}", f"0@{at + 70}")

    assert code == 1, out
    assert f"replayed 0@{at} to {site.source}" in out and f"no dead letter 0@{at + 70}" in out


async def test_list_by_topic_finds_the_letters_it_shows_under_that_topic(site: Site) -> None:
    """A notification the notifier gave up on names where it came from in `dlq_source` (no consumer read it): the
    list shows it under notifier.delivery, and --topic notifier.delivery must find it."""
    given_up = [("dlq_source", b"notifier.delivery"), ("dlq_failed_at", datetime.now(UTC).isoformat().encode())]
    at = await site.send(site.dead, b"ord_3", b"{}", given_up)

    code, out = await run_dlq(site.broker, site.prefix, "list", "--topic", "notifier.delivery")

    assert code == 0 and f"0@{at}" in out, out
