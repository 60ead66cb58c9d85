"""The end offsets the ticker samples every tick are what the safe time stands on (watermarks.py): an end below the
true one lets a partition count as read completely up to a wall time while records written before it are still
unread, so an order whose credit is among them can be flagged. On the embedded Tansu a plain ListOffsets answer is
short after a batch of several records (adapters/tansu.py); the worker asks the same client again on every tick.
Real broker."""

from aiokafka import AIOKafkaProducer, TopicPartition

from reconciler.adapters.offsets import BrokerOffsets
from servicekit.kafka import ensure_topics
from tests.conftest import Broker

BATCH = 5


async def _write_one_batch(producer: AIOKafkaProducer, topic: str) -> None:
    """BATCH records to partition 0 in one produce request, as a relay's batch arrives."""
    sent = [await producer.send(topic, b"credit", key=b"ord_1", partition=0) for _ in range(BATCH)]
    await producer.flush()
    for future in sent:
        await future


async def test_the_end_offsets_asked_for_on_every_tick_cover_every_batch_written_before(
    broker: Broker, isolation: str
) -> None:
    topic = f"{isolation}.ends"
    tp = TopicPartition(topic, 0)
    await ensure_topics(broker.bootstrap, [topic], 1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
    offsets = BrokerOffsets(broker.bootstrap, tansu=not broker.idempotence)
    await producer.start()
    await offsets.start()
    try:
        answers = []
        for written in range(BATCH, 6 * BATCH, BATCH):
            await _write_one_batch(producer, topic)
            answers.append(((await offsets.end_offsets([tp]))[tp], written))
        assert all(end == written for end, written in answers), (
            f"(end offset sampled, records written) tick after tick: {answers}"
        )
    finally:
        await offsets.stop()
        await producer.stop()
