"""The consumer loop hands each poll to the batch handler once, in one transaction, and commits all partitions'
offsets once after it; a failing batch is handled again one message at a time so only the bad message is
dead-lettered; transient failures are retried, never dead-lettered; a commit refused after a rebalance does not
stop the consumer. The broker and the database are stand-ins here (tests/servicekit/consumer_fakes.py); the
integration tests run the same loop on the real ones."""

import asyncio
import dataclasses
from collections.abc import Collection, Sequence
from typing import cast

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaTimeoutError, RebalanceInProgressError

from contracts.base import Message
from contracts.codec import Envelope
from contracts.events import PaymentSucceeded
from servicekit.consumer import KafkaConsumerLoop
from servicekit.kafka import BatchHandler, DeadLetterPublisher, PermanentFailure, only
from tests.servicekit.consumer_fakes import FakeConsumer, KeptDeadLetters, Record, Store, polled, record


class Handler:
    """Writes each order id it is given; fails on the orders in `bad` (with PermanentFailure for `rejected`)
    and transiently on its first `transient` calls."""

    def __init__(
        self,
        store: Store,
        bad: frozenset[str] = frozenset(),
        rejected: frozenset[str] = frozenset(),
        transient: int = 0,
    ) -> None:
        self.store, self.bad, self.rejected, self.transient = store, bad, rejected, transient
        self.calls: list[list[Message]] = []

    async def __call__(self, deliveries: Sequence[tuple[Message, Envelope]]) -> None:
        self.calls.append([m for m, _ in deliveries])
        if self.transient > 0:
            self.transient -= 1
            raise ConnectionResetError("the database went away")
        for message, _ in deliveries:
            self.store.write(message.order_id)  # written, then rolled back if a later message fails
            if message.order_id in self.rejected:
                raise PermanentFailure(f"{message.order_id} breaks a rule")
            if message.order_id in self.bad:
                raise ValueError(f"cannot handle {message.order_id}")


def consumer_loop(
    handler: BatchHandler, store: Store, consumer: FakeConsumer, dead: KeptDeadLetters
) -> KafkaConsumerLoop:
    loop = KafkaConsumerLoop(
        bootstrap="127.0.0.1:1",  # never started: the fake consumer stands in for the broker
        group_id="g",
        topics=["t"],
        handler=handler,
        dead_letters=cast(DeadLetterPublisher, dead),
        batch_scope=store.transaction,
        message_scope=store.savepoint,
    )
    loop._consumer = consumer  # type: ignore[assignment]
    return loop


async def run_polls(loop: KafkaConsumerLoop, consumer: FakeConsumer, polls: int) -> None:
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(10):
            while len(consumer.committed) < polls and not task.done():
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not task.done() or task.cancelled(), task.exception()


async def test_a_poll_of_several_partitions_is_one_batch_one_transaction_and_one_commit() -> None:
    store, dead = Store(), KeptDeadLetters()
    consumer = FakeConsumer([polled(record("a", 5), record("b", 6), record("c", 9, partition=1))])
    handler = Handler(store)
    await run_polls(consumer_loop(handler, store, consumer, dead), consumer, 1)
    assert [[m.order_id for m in call] for call in handler.calls] == [["a", "b", "c"]]
    assert store.committed == ["a", "b", "c"] and store.commits == 1
    assert consumer.committed == [{TopicPartition("t", 0): 7, TopicPartition("t", 1): 10}]
    assert dead.sent == []


async def test_a_failing_batch_is_handled_one_message_at_a_time_and_only_the_bad_ones_are_dead_lettered() -> None:
    store, dead = Store(), KeptDeadLetters()
    records = [
        record("a", 0),
        record("bad", 1),
        record("undecodable", 2, value=b"{not json"),
        record("rule", 3),
        record("b", 4),
    ]
    consumer = FakeConsumer([polled(*records)])
    handler = Handler(store, bad=frozenset({"bad"}), rejected=frozenset({"rule"}))
    await run_polls(consumer_loop(handler, store, consumer, dead), consumer, 1)
    assert store.committed == ["a", "b"] and store.commits == 1  # the set-based attempt left nothing behind
    reasons = dead.reasons()
    assert set(reasons) == {b"bad", b"undecodable", b"rule"}
    assert reasons[b"bad"].startswith("handler failed 3 times: ValueError('cannot handle bad')")
    assert reasons[b"rule"] == "rejected: rule breaks a rule"
    assert reasons[b"undecodable"].startswith("undecodable: value is not JSON")
    assert consumer.committed == [{TopicPartition("t", 0): 5}]
    # Decoded once: the messages handed over one at a time are the very objects of the set-based attempt.
    first = {id(m) for m in handler.calls[0]}
    assert all(id(m) in first for call in handler.calls[1:] for m in call)


async def test_transient_failures_roll_the_batch_back_and_retry_it_without_dead_lettering() -> None:
    store, dead = Store(), KeptDeadLetters()
    consumer = FakeConsumer([polled(record("a", 0), record("b", 1))])
    handler = Handler(store, transient=2)
    await run_polls(consumer_loop(handler, store, consumer, dead), consumer, 1)
    assert len(handler.calls) == 3 and store.committed == ["a", "b"] and store.commits == 1
    assert dead.sent == [] and consumer.committed == [{TopicPartition("t", 0): 2}]


@pytest.mark.parametrize(
    "refusal",
    [CommitFailedError("rebalanced"), IllegalStateError("not assigned"), RebalanceInProgressError()],
    ids=["commit-failed", "illegal-state", "rebalance-in-progress"],
)
async def test_a_commit_refused_because_the_partition_moved_mid_batch_does_not_stop_the_consumer(
    refusal: Exception,
) -> None:
    store, dead = Store(), KeptDeadLetters()
    consumer = FakeConsumer([polled(record("a", 0)), polled(record("b", 1))], refuse=refusal)
    await run_polls(consumer_loop(Handler(store), store, consumer, dead), consumer, 1)
    assert store.committed == ["a", "b"]  # the next poll was handled after the refused commit
    assert consumer.committed == [{TopicPartition("t", 0): 2}]


async def test_a_partition_revoked_while_its_poll_was_handled_is_left_to_its_next_owner() -> None:
    store, dead = Store(), KeptDeadLetters()
    consumer = FakeConsumer([polled(record("a", 0), record("b", 3, partition=1))])

    class Revoking(Handler):
        async def __call__(self, deliveries: Sequence[tuple[Message, Envelope]]) -> None:
            consumer.assigned.discard(TopicPartition("t", 1))
            await super().__call__(deliveries)

    await run_polls(consumer_loop(Revoking(store), store, consumer, dead), consumer, 1)
    assert consumer.committed == [{TopicPartition("t", 0): 1}]


async def test_a_dead_letter_the_broker_cannot_take_yet_is_sent_again_before_the_poll_is_committed() -> None:
    store = Store()

    class BrokerAwayOnce(KeptDeadLetters):
        def __init__(self) -> None:
            super().__init__()
            self.refused = 0

        async def send_many(self, failed: Sequence[tuple[Record, str]], *, consumer_group: str) -> None:
            if not self.refused:
                self.refused += 1
                raise KafkaTimeoutError()
            await super().send_many(failed, consumer_group=consumer_group)

    dead = BrokerAwayOnce()
    consumer = FakeConsumer([polled(record("a", 0), record("bad", 1, value=b"{"))])
    await run_polls(consumer_loop(Handler(store), store, consumer, dead), consumer, 1)
    assert dead.refused == 1 and list(dead.reasons()) == [b"bad"]
    assert store.committed == ["a"] and consumer.committed == [{TopicPartition("t", 0): 2}]


def retyped(consumed: Record, event_type: bytes | None) -> Record:
    """`consumed` with its event_type header set to `event_type`, or without one (None)."""
    headers = [(k, v) for k, v in consumed.headers if k != "event_type"]
    if event_type is not None:
        headers.insert(0, ("event_type", event_type))
    return dataclasses.replace(consumed, headers=headers)


async def test_a_record_of_a_known_type_the_handler_does_not_act_on_is_skipped_undecoded_and_committed() -> None:
    store, dead = Store(), KeptDeadLetters()
    # Their values do not decode: had the loop decoded them, they would be dead-lettered.
    placed = retyped(record("placed", 0, value=b"{not json"), b"OrderPlaced")
    expired = retyped(record("expired", 2, value=b"{not json"), b"OrderExpired")
    consumer = FakeConsumer([polled(placed, record("paid", 1), expired)])
    handler = Handler(store)
    loop = consumer_loop(only({PaymentSucceeded}, handler), store, consumer, dead)
    await run_polls(loop, consumer, 1)
    assert [[m.order_id for m in call] for call in handler.calls] == [["paid"]]
    assert dead.sent == [] and store.committed == ["paid"]
    assert consumer.committed == [{TopicPartition("t", 0): 3}]
    assert loop.skipped_total == 2 and loop.consumed_total == 3


async def test_a_message_on_a_topic_that_does_not_carry_it_is_dead_lettered_undecoded_as_wrong_topic() -> None:
    store, dead = Store(), KeptDeadLetters()
    # A PaymentSucceeded on "t", which carries only refunds here: refused before decoding (its value would not
    # decode); the same type on "u", which carries it, is handled; an unknown type on "t" is decoded as always.
    forged = record("forged", 0, value=b"{not json")
    carried = dataclasses.replace(record("paid", 0), topic="u")
    unknown = retyped(record("unknown", 1), b"NoSuchEvent")
    consumer = FakeConsumer([polled(forged, carried, unknown)])
    handler = Handler(store)
    loop = KafkaConsumerLoop(
        bootstrap="127.0.0.1:1",
        group_id="g",
        topics=["t", "u"],
        handler=only({PaymentSucceeded}, handler),
        dead_letters=cast(DeadLetterPublisher, dead),
        batch_scope=store.transaction,
        message_scope=store.savepoint,
        carried={"t": ["RefundSucceeded"], "u": ["PaymentSucceeded"]},
    )
    loop._consumer = consumer  # type: ignore[assignment]
    await run_polls(loop, consumer, 1)
    reasons = dead.reasons()
    assert reasons[b"forged"] == (
        "rejected: wrong_topic: t does not carry PaymentSucceeded (it carries RefundSucceeded), not decoded"
    )
    assert reasons[b"unknown"] == "undecodable: unknown event_type 'NoSuchEvent'"
    assert store.committed == ["paid"] and [[m.order_id for m in c] for c in handler.calls] == [["paid"]]
    assert consumer.committed == [{TopicPartition("t", 0): 2, TopicPartition("u", 0): 1}]


async def test_a_record_with_no_or_an_unknown_event_type_header_is_still_decoded_and_dead_lettered() -> None:
    store, dead = Store(), KeptDeadLetters()
    records = [
        retyped(record("missing", 0), None),
        retyped(record("unknown", 1), b"NoSuchEvent"),
        retyped(record("binary", 2), b"\xff\xfe"),
        record("paid", 3),
    ]
    consumer = FakeConsumer([polled(*records)])
    handler = Handler(store)
    loop = consumer_loop(only({PaymentSucceeded}, handler), store, consumer, dead)
    await run_polls(loop, consumer, 1)
    reasons = dead.reasons()
    assert reasons[b"missing"] == "undecodable: missing headers: event_type"
    assert reasons[b"unknown"] == "undecodable: unknown event_type 'NoSuchEvent'"
    assert reasons[b"binary"] == "undecodable: header 'event_type' is not UTF-8"
    assert store.committed == ["paid"] and loop.skipped_total == 0
    assert consumer.committed == [{TopicPartition("t", 0): 4}]


async def test_a_handler_that_names_no_types_has_every_record_decoded() -> None:
    store, dead = Store(), KeptDeadLetters()
    placed = retyped(record("placed", 0, value=b"{not json"), b"OrderPlaced")
    consumer = FakeConsumer([polled(placed, record("paid", 1))])
    loop = consumer_loop(Handler(store), store, consumer, dead)
    await run_polls(loop, consumer, 1)
    assert list(dead.reasons()) == [b"placed"] and store.committed == ["paid"] and loop.skipped_total == 0


async def test_a_failed_poll_has_all_its_orders_locked_at_once_before_its_messages_are_retried_one_at_a_time() -> None:
    store, dead = Store(), KeptDeadLetters()
    timeline: list[object] = []
    inner = Handler(store, bad=frozenset({"bad"}))

    async def handle(deliveries: Sequence[tuple[Message, Envelope]]) -> None:
        timeline.append([m.order_id for m, _ in deliveries])
        await inner(deliveries)

    async def lock_orders(order_ids: Collection[str]) -> None:
        timeline.append(("locked", sorted(order_ids)))

    records = [record("b", 0), record("bad", 1), record("a", 2), record("b", 3)]
    consumer = FakeConsumer([polled(*records), polled(record("c", 4))])
    handler = only({PaymentSucceeded}, handle, lock_orders=lock_orders)
    await run_polls(consumer_loop(handler, store, consumer, dead), consumer, 2)
    # Set-based, the handler locks its orders itself; one at a time, they are all locked first, once. A transaction
    # of one order (the poll of "c", set-based) has nothing to order.
    assert timeline == [
        ["b", "bad", "a", "b"],
        ("locked", ["a", "b", "bad"]),
        ["b"],
        *[["bad"]] * 3,
        ["a"],
        ["b"],
        ["c"],
    ]
    assert store.committed == ["b", "a", "b", "c"] and set(dead.reasons()) == {b"bad"}
