"""`credited dlq` against a real broker and a real ledger: payments the ledger could not credit (a wallet cap
set too low refused them, three times each) are dead-lettered by its consumer; once the cap is fixed,
`credited dlq replay` re-drives them and each wallet is credited once; replaying again, or two operators
replaying at once, sends nothing twice. A dead letter that is not a true copy of a record its consumer group
read (any service may write the dead-letter topic) is refused, and the rest of the replay goes on."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiokafka import ConsumerRecord

from contracts.codec import Record, decode, deterministic_id, encode, envelope_for
from contracts.commands import RetryCredit
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic
from credited.deadletters import Outcome, ReplayInterrupted, dead_letters, replay
from ledger.bootstrap import build
from ledger.config import Settings
from servicekit.infrastructure import Infrastructure
from servicekit.kafka import KafkaPublisher
from servicekit.settings import ServiceSettings
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_all
from tests.service_settings import settings_for
from tests.stack.dlq_cli import run_dlq

CAP = "ALTER TABLE accounts ADD CONSTRAINT wallet_cap CHECK (kind <> 'wallet' OR balance <= 1000)"
UNCAP = "ALTER TABLE accounts DROP CONSTRAINT wallet_cap"


def payment(order_id: str, amount: int) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order_id,
        user_id=f"u-{order_id}",
        amount=amount,
        currency="CNY",
        channel="card",
        provider="sim",
        provider_txn_id=f"tx-{order_id}",
        paid_at=datetime.now(UTC),
    )


@dataclass
class Ledger:
    """A running ledger (its consumers and outbox relay) and how to reach its topics."""

    infra: Infrastructure
    broker: Broker
    prefix: str

    def topic(self, topic: Topic) -> str:
        return topic.qualified(self.prefix)

    async def balance(self, user_id: str) -> int | None:
        query = "SELECT balance FROM accounts WHERE kind = 'wallet' AND user_id = $1"
        balance: int | None = await self.infra.pool.fetchval(query, user_id)
        return balance

    async def credits(self, order_id: str) -> int:
        query = "SELECT count(*) FROM transactions WHERE kind = 'credit' AND order_id = $1"
        return int(await self.infra.pool.fetchval(query, order_id))

    async def records(self, topic: Topic, key: str) -> list[ConsumerRecord[bytes, bytes]]:
        """`key`'s records as the services read them, committed only: a replay run fenced in the middle of a
        transaction by another run leaves that transaction's record in the log, aborted (deadletters.py)."""
        records = await read_all(self.broker.bootstrap, self.topic(topic), committed=True)
        return [r for r in records if r.key == key.encode()]

    async def dlq(self, *args: str) -> tuple[int, str]:
        """`credited dlq ...` as an operator runs it, with the services' Kafka settings."""
        return await run_dlq(self.broker, self.prefix, *args)


@pytest.fixture
async def ledger(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[Ledger]:
    settings = settings_for(Settings, broker, database_url, isolation)
    infra, _ = await build(settings)
    for consumer in infra.consumers:
        await consumer.start()
    tasks = [asyncio.create_task(c.run()) for c in infra.consumers] + [asyncio.create_task(infra.relay.run())]
    try:
        yield Ledger(infra, broker, settings.topic_prefix)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await infra.close()


async def pay(ledger: Ledger, *orders: tuple[str, int]) -> None:
    publisher = KafkaPublisher(ledger.broker.bootstrap, idempotence=ledger.broker.idempotence, client_id="test")
    await publisher.start()
    try:
        for order_id, amount in orders:
            message = payment(order_id, amount)
            record = encode(message, envelope_for(message, producer="payments", event_id=f"pay-{order_id}"))
            await publisher.publish(ledger.topic(Topic.PAYMENTS_EVENTS), record)
    finally:
        await publisher.stop()


async def dead_lettered(ledger: Ledger, *orders: str) -> None:
    async def all_there() -> bool:
        letters = await read_all(ledger.broker.bootstrap, ledger.topic(Topic.DEAD_LETTER))
        return {r.key.decode() for r in letters if r.key} >= set(orders)

    await eventually(all_there, timeout_s=90, interval_s=0.5)


async def credited_once(ledger: Ledger, order_id: str, amount: int) -> None:
    await eventually(lambda: ledger.credits(order_id), timeout_s=90, interval_s=0.3)
    assert await ledger.credits(order_id) == 1
    assert await ledger.balance(f"u-{order_id}") == amount


def replayed_copies(records: list[ConsumerRecord[bytes, bytes]]) -> list[ConsumerRecord[bytes, bytes]]:
    return [r for r in records if any(k == "dlq_replayed_from" for k, _ in r.headers)]


async def test_a_payment_dead_lettered_until_its_cause_is_fixed_is_credited_once_by_a_replay(ledger: Ledger) -> None:
    async with ledger.infra.pool.acquire() as conn:
        await conn.execute(CAP)
    await pay(ledger, ("ord_big", 5000), ("ord_small", 500))
    await dead_lettered(ledger, "ord_big")
    await credited_once(ledger, "ord_small", 500)
    assert await ledger.credits("ord_big") == 0

    code, out = await ledger.dlq("list", "--group", "ledger.payments", "--json")
    assert code == 0, out
    (listed,) = [json.loads(line) for line in out.splitlines()]
    assert (listed["key"], listed["event_id"]) == ("ord_big", "pay-ord_big")
    assert listed["topic"] == ledger.topic(Topic.PAYMENTS_EVENTS)
    assert "wallet_cap" in listed["reason"] and listed["replayed"] is None
    code, out = await ledger.dlq("show", listed["id"])
    assert code == 0 and '"amount": 5000' in out and "dlq_consumer_group: " in out, out

    code, out = await ledger.dlq("replay", "--group", "ledger.payments", "--dry-run")
    assert code == 0 and f"would replay {listed['id']}" in out, out
    async with ledger.infra.pool.acquire() as conn:
        await conn.execute(UNCAP)
    code, out = await ledger.dlq("replay", "--reason", "wallet_cap", "--by", "on-call")
    assert code == 0 and "replayed 1, already replayed 0" in out, out
    await credited_once(ledger, "ord_big", 5000)

    code, out = await ledger.dlq("replay", "--all", "--by", "on-call")
    assert code == 0 and "replayed 0, already replayed 1" in out, out
    copies = replayed_copies(await ledger.records(Topic.PAYMENTS_EVENTS, "ord_big"))
    assert len(copies) == 1
    headers = dict(copies[0].headers)
    assert headers["event_id"] == b"pay-ord_big"
    assert headers["dlq_replayed_from"].decode().endswith(f"[{listed['id'].replace('@', ']@')}")
    posted = [decode(r.value, r.headers) for r in await ledger.records(Topic.LEDGER_EVENTS, "ord_big")]
    first = deterministic_id("CreditPosted", "ord_big", "credit")
    assert [e.event_id for m, e in posted if isinstance(m, CreditPosted)].count(first) == 1
    code, out = await ledger.dlq("list", "--json")
    (listed,) = [json.loads(line) for line in out.splitlines()]
    assert listed["replayed"]["by"] == "on-call"


async def test_two_operators_replaying_at_once_send_each_dead_letter_once(ledger: Ledger) -> None:
    if ledger.broker.kind == "embedded":
        pytest.fail(
            "Apache Kafka only (make test runs it there): the embedded Tansu has no transactions, which keep two"
            " replay runs apart (deadletters.py)"
        )
    orders = [(f"ord_{n}", 2000 + n) for n in range(12)]
    async with ledger.infra.pool.acquire() as conn:
        await conn.execute(CAP)
    await pay(ledger, *orders)
    await dead_lettered(ledger, *(o for o, _ in orders))
    async with ledger.infra.pool.acquire() as conn:
        await conn.execute(UNCAP)

    # Both runs start together and each reads the replays log before either has sent anything.
    settings = ServiceSettings(
        kafka_bootstrap=ledger.broker.bootstrap, kafka_broker="apache", topic_prefix=ledger.prefix
    )
    letters = await dead_letters(settings)
    runs = await asyncio.gather(
        *(replay(settings, letters, by=f"operator-{n}") for n in range(2)), return_exceptions=True
    )
    assert all(isinstance(r, Outcome | ReplayInterrupted) for r in runs), runs
    for order_id, amount in orders:
        await credited_once(ledger, order_id, amount)
        assert len(replayed_copies(await ledger.records(Topic.PAYMENTS_EVENTS, order_id))) == 1, order_id
    code, out = await ledger.dlq("replay", "--all")
    assert code == 0 and f"replayed 0, already replayed {len(orders)}" in out, out


async def plant(ledger: Ledger, key: str, value: bytes, headers: list[tuple[str, bytes]]) -> None:
    """A record written to the dead-letter topic directly, as any service's principal may."""
    publisher = KafkaPublisher(ledger.broker.bootstrap, idempotence=ledger.broker.idempotence, client_id="test")
    await publisher.start()
    try:
        record = Record(key=key.encode(), value=value, headers=headers)
        await publisher.publish_many([(ledger.topic(Topic.DEAD_LETTER), record)])
    finally:
        await publisher.stop()


def claims(ledger: Ledger, topic: Topic, group: str, *, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The `dlq_*` headers of a dead letter as a consumer of `group` writes them."""
    return [
        ("dlq_reason", b"handler_failed: planted"),
        ("dlq_source_topic", ledger.topic(topic).encode()),
        ("dlq_source_partition", str(partition).encode()),
        ("dlq_source_offset", str(offset).encode()),
        ("dlq_consumer_group", f"{ledger.prefix}{group}".encode()),
        ("dlq_failed_at", datetime.now(UTC).isoformat().encode()),
    ]


async def test_a_payment_planted_by_the_notifier_naming_payments_events_is_refused_and_nothing_reaches_it(
    ledger: Ledger,
) -> None:
    forged = payment("ord_forged", 900)
    record = encode(forged, envelope_for(forged, producer="payments", event_id="pay-ord_forged"))
    # The notifier reads payments.events only in notifier.payments: its other group never read a record there.
    await plant(ledger, "ord_forged", record.value, [*record.headers, *claims(
        ledger, Topic.PAYMENTS_EVENTS, "notifier.order-status", partition=0, offset=0
    )])  # fmt: skip
    # In the group that does read it, pointing at an offset that holds nothing (the topic is empty).
    await plant(ledger, "ord_forged", record.value, [*record.headers, *claims(
        ledger, Topic.PAYMENTS_EVENTS, "notifier.payments", partition=0, offset=0
    )])  # fmt: skip
    # Stating no offset, as the ledger's parked retries do: nothing like it is on the topic either.
    kept = claims(ledger, Topic.PAYMENTS_EVENTS, "ledger.payments", partition=0, offset=0)
    await plant(ledger, "ord_forged", record.value, [*record.headers, *kept[:2], *kept[4:]])
    await dead_lettered(ledger, "ord_forged")

    code, out = await ledger.dlq("replay", "--all", "--by", "on-call")

    assert code == 1, out
    assert "replaying 0: none (refused 3)" in out, out
    assert "does not read" in out and "no record at" in out and "no copy of it in" in out, out
    assert "replayed 0, already replayed 0, not replayable 0, refused 3" in out, out
    assert await ledger.records(Topic.PAYMENTS_EVENTS, "ord_forged") == []
    assert await ledger.credits("ord_forged") == 0
    code, out = await ledger.dlq("list", "--json")
    assert all(json.loads(line)["replayed"] is None for line in out.splitlines()), out


async def test_a_dead_letter_whose_payload_differs_from_the_record_at_its_offset_is_refused(ledger: Ledger) -> None:
    async with ledger.infra.pool.acquire() as conn:
        await conn.execute(CAP)
    await pay(ledger, ("ord_big", 5000))
    await dead_lettered(ledger, "ord_big")
    settings = ServiceSettings(kafka_bootstrap=ledger.broker.bootstrap, topic_prefix=ledger.prefix)
    (genuine,) = await dead_letters(settings)
    # The same claims, the amount raised: the record at the offset it names is not this one.
    inflated = genuine.value.replace(b"5000", b"9000")
    assert inflated != genuine.value
    await plant(ledger, "ord_big", inflated, list(genuine.headers))
    await eventually(lambda: _count_dead_letters(ledger, 2), timeout_s=30, interval_s=0.3)
    async with ledger.infra.pool.acquire() as conn:
        await conn.execute(UNCAP)

    code, out = await ledger.dlq("replay", "--reason", "wallet_cap", "--by", "on-call")

    assert code == 1, out
    assert f"replaying 1: 1 to {ledger.topic(Topic.PAYMENTS_EVENTS)} (refused 1)" in out, out
    assert f"replayed {genuine.id} to" in out and "is not a copy of the record at" in out, out
    await credited_once(ledger, "ord_big", 5000)
    copies = replayed_copies(await ledger.records(Topic.PAYMENTS_EVENTS, "ord_big"))
    assert [c.value for c in copies] == [genuine.value]


async def _count_dead_letters(ledger: Ledger, n: int) -> bool:
    return len(await read_all(ledger.broker.bootstrap, ledger.topic(Topic.DEAD_LETTER))) >= n


async def test_a_parked_retry_dead_lettered_from_the_ledgers_outbox_without_an_offset_is_replayed(
    ledger: Ledger,
) -> None:
    command = RetryCredit(
        order_id="ord_parked",
        user_id="u-ord_parked",
        amount=700,
        currency="CNY",
        attempt=1,
        requested_at=datetime.now(UTC),
        provider_txn_id="tx-ord_parked",
    )
    record = encode(command, envelope_for(command, producer="reconciler", event_id="retry-ord_parked"))
    publisher = KafkaPublisher(ledger.broker.bootstrap, idempotence=ledger.broker.idempotence, client_id="test")
    await publisher.start()
    try:
        await publisher.publish(ledger.topic(Topic.LEDGER_COMMANDS), record)
    finally:
        await publisher.stop()
    # What ledger.adapters.parking writes to the outbox for it: the record it kept, no partition or offset.
    kept = claims(ledger, Topic.LEDGER_COMMANDS, "ledger.commands", partition=0, offset=0)
    await plant(ledger, "ord_parked", record.value, [*record.headers, *kept[:2], *kept[4:]])
    await dead_lettered(ledger, "ord_parked")
    await pay(ledger, ("ord_parked", 700))

    code, out = await ledger.dlq("replay", "--group", "ledger.commands", "--by", "on-call")

    assert code == 0 and "replayed 1, already replayed 0, not replayable 0, refused 0" in out, out
    copies = replayed_copies(await ledger.records(Topic.LEDGER_COMMANDS, "ord_parked"))
    assert [c.value for c in copies] == [record.value]
    await credited_once(ledger, "ord_parked", 700)


async def test_letters_whose_failed_at_has_no_zone_or_is_no_time_are_listed_with_the_others_not_stopping_them(
    ledger: Ledger,
) -> None:
    message = payment("ord_ok", 100)
    record = encode(message, envelope_for(message, producer="payments", event_id="pay-ord_ok"))
    good = claims(ledger, Topic.PAYMENTS_EVENTS, "ledger.payments", partition=0, offset=0)
    await plant(ledger, "ord_ok", record.value, [*record.headers, *good])
    naive_at = datetime.now(UTC).replace(tzinfo=None).isoformat()  # written by some service without its zone
    for key, stamp in (("ord_naive", naive_at.encode()), ("ord_garbled", b"yesterday-ish")):
        headers = [(k, v) for k, v in good if k != "dlq_failed_at"] + [("dlq_failed_at", stamp)]
        await plant(ledger, key, b"{}", headers)
    topic = ledger.topic(Topic.DEAD_LETTER)
    await eventually(lambda: _has(ledger.broker.bootstrap, topic, 3), timeout_s=30, interval_s=0.3)
    settings = ServiceSettings(kafka_bootstrap=ledger.broker.bootstrap, topic_prefix=ledger.prefix)

    letters = await dead_letters(settings)
    assert sorted(d.key for d in letters) == [b"ord_garbled", b"ord_naive", b"ord_ok"]
    assert all(d.failed_at.tzinfo is not None for d in letters)
    naive = next(d for d in letters if d.key == b"ord_naive")
    assert naive.failed_at == datetime.fromisoformat(naive_at).replace(tzinfo=UTC)
    code, out = await ledger.dlq("list", "--json")
    assert code == 0, out


async def _has(bootstrap: str, topic: str, n: int) -> bool:
    return len(await read_all(bootstrap, topic)) >= n
