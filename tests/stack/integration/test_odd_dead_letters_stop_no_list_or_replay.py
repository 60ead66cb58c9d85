"""Dead letters end to end, against the real broker: letters any service may write (or a consumer wrote from an
odd record) must not stop `credited dlq list` or `replay` for all the others."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from contracts.codec import encode, envelope_for
from contracts.topics import Topic
from credited.deadletters import dead_letters, replay
from servicekit.kafka import ensure_topics
from servicekit.settings import ServiceSettings
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all
from tests.servicekit.events import paid
from tests.stack.dlq_cli import run_dlq

Headers = Sequence[tuple[str, bytes | None]]


@dataclass
class Site:
    broker: Broker
    prefix: str

    def topic(self, topic: Topic) -> str:
        return topic.qualified(self.prefix)

    @property
    def settings(self) -> ServiceSettings:
        return ServiceSettings(
            kafka_bootstrap=self.broker.bootstrap,
            kafka_broker="tansu" if self.broker.kind == "embedded" else "apache",
            topic_prefix=self.prefix,
        )

    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> tuple[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap)
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, value, key=key, headers=headers)
            return sent.partition, sent.offset
        finally:
            await producer.stop()

    async def original_and_letter(self, key: str, headers: list[tuple[str, bytes | None]], value: bytes) -> None:
        """A record on payments.events, and its dead letter as the ledger's consumer writes it."""
        source = self.topic(Topic.PAYMENTS_EVENTS)
        partition, offset = await self.send(source, key.encode(), value, headers)
        letter = [(k, v or b"") for k, v in headers] + [
            ("dlq_reason", b"undecodable: planted"),
            ("dlq_source_topic", source.encode()),
            ("dlq_source_partition", str(partition).encode()),
            ("dlq_source_offset", str(offset).encode()),
            ("dlq_consumer_group", f"{self.prefix}ledger.payments".encode()),
            ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        await self.send(self.topic(Topic.DEAD_LETTER), key.encode(), value, letter)

    async def letter_of_type(self, key: str, event_type: bytes, reason: bytes) -> None:
        """A dead letter (no original on the topic) of a record whose event_type header is `event_type`."""
        value, headers = good_record(key)
        odd = [(k, v or b"") for k, v in headers if k != "event_type"] + [("event_type", event_type)]
        letter = [
            *odd,
            ("dlq_reason", reason),
            ("dlq_source_topic", self.topic(Topic.PAYMENTS_EVENTS).encode()),
            ("dlq_source_partition", b"0"),
            ("dlq_source_offset", b"0"),
            ("dlq_consumer_group", f"{self.prefix}ledger.payments".encode()),
            ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        await self.send(self.topic(Topic.DEAD_LETTER), key.encode(), value, letter)

    async def dlq(self, *args: str) -> tuple[int, str]:
        return await run_dlq(self.broker, self.prefix, *args)


@pytest.fixture
async def site(broker: Broker, isolation: str) -> Site:
    prefix = f"{isolation}."
    names = [Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.DEAD_LETTER.qualified(prefix)]
    await ensure_topics(broker.bootstrap, names, 3)
    return Site(broker, prefix)


def good_record(order_id: str) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    message = paid(order_id)
    record = encode(message, envelope_for(message, producer="payments", event_id=f"pay-{order_id}"))
    return record.value, list(record.headers)


async def letters_there(site: Site, n: int) -> None:
    async def enough() -> bool:
        return len(await read_all(site.broker.bootstrap, site.topic(Topic.DEAD_LETTER))) >= n

    await eventually(enough, timeout_s=30, interval_s=0.3)


async def test_a_reason_quoting_square_brackets_is_listed_whole_and_does_not_stop_the_list(site: Site) -> None:
    # What the consumer writes for a record whose event_type header is "[/x]" (codec: unknown event_type '...').
    value, headers = good_record("ord_plain")
    await site.original_and_letter("ord_plain", headers, value)
    await site.letter_of_type("ord_odd", b"[/x]", b"undecodable: unknown event_type '[/x]' and [bold]more[/bold]")
    await letters_there(site, 2)

    code, out = await site.dlq("list")

    assert code == 0, out
    assert "ord_plain" in out and "ord_odd" in out, out
    assert "[bold]more[/bold]" in out, out


async def replays_the_good_one_beside(site: Site, key: str, headers: Headers, value: bytes) -> None:
    """An odd letter of `key` and a plain one: the replay sends the plain one whatever the odd one does."""
    await site.original_and_letter(key, list(headers), value)
    value, good = good_record("ord_good")
    await site.original_and_letter("ord_good", good, value)
    await letters_there(site, 2)
    letters = await dead_letters(site.settings)
    assert len(letters) == 2

    outcome = await replay(site.settings, letters, by="on-call")

    assert {d.key for d in outcome.replayed} >= {b"ord_good"}, outcome


async def test_a_letter_whose_event_id_is_not_utf8_does_not_stop_the_replay_of_the_others(site: Site) -> None:
    value, headers = good_record("ord_bad_id")
    bad = [(k, b"\xff\xfe-not-utf8" if k == "event_id" else v) for k, v in headers]
    await replays_the_good_one_beside(site, "ord_bad_id", bad, value)


async def test_a_letter_whose_original_has_a_header_without_a_value_does_not_stop_the_replay(site: Site) -> None:
    value, headers = good_record("ord_null_header")
    await replays_the_good_one_beside(site, "ord_null_header", [*headers, ("traceparent", None)], value)


async def test_a_reason_quoting_what_looks_like_a_style_tag_is_listed_uncut(site: Site) -> None:
    # The consumer's reason for a record whose event_type header is "[red]": codec quotes it.
    await site.letter_of_type("ord_red", b"[red]", b"undecodable: unknown event_type '[red]'")
    await letters_there(site, 1)

    code, out = await site.dlq("list")

    assert code == 0, out
    assert "unknown event_type '[red]'" in out, out
