"""The status topic as consumers see it, for the tests of rounds the broker refused in part: every status change that
landed (by order, with its event id), and, while `refusing`, a refusal for every record of the `refused` topics (the
ledger's command topic by default: another partition's leader)."""

from typing import Any

from aiokafka.errors import KafkaError

from contracts.codec import decode
from contracts.events import OrderStatusChanged
from reconciler.domain import Policy
from tests.reconciler.unit.worker import TOPICS, Worker, done, paid

POLICY = Policy(threshold_s=5)


class Broker:
    """The worker's producer, seen from the status topic."""

    def __init__(self, worker: Worker, refused: tuple[str, ...] = (TOPICS["ledger"],)) -> None:
        self.worker, self.send, self.refused, self.refusing = worker, worker.producer.send, refused, False
        self.of: list[tuple[str, str, int, str]] = []  # (order id, event id, sequence, status)
        worker.producer.send = self  # type: ignore[method-assign]

    async def __call__(self, topic: str, key: bytes, value: bytes, partition: Any, ts: Any, headers: Any) -> Any:
        if self.refusing and topic in self.refused:
            return done(self.worker.journal, "refused command", KafkaError("NOT_LEADER_OR_FOLLOWER"))
        if topic == TOPICS["status"]:
            message, envelope = decode(value, headers)
            assert isinstance(message, OrderStatusChanged)
            self.of.append((message.order_id, envelope.event_id, message.sequence, message.status.value))
        return await self.send(topic, key, value, partition, ts, headers)

    def taken_over(self) -> tuple[Worker, "Broker"]:
        """The worker's orders taken over by a new owner (a restart, or a handover): a worker with its table restored
        from this one's changelog, and the status topic as consumers see it, what landed before included."""
        again = self.worker.restarted()
        seen = Broker(again, self.refused)
        seen.of = self.of
        return again, seen

    @property
    def landed(self) -> list[tuple[str, int, str]]:
        """Every status change that landed: (event id, sequence, status)."""
        return [(event_id, sequence, status) for _, event_id, sequence, status in self.of]

    def landed_of(self, order_id: str) -> list[tuple[int, str]]:
        return [(sequence, status) for order, _, sequence, status in self.of if order == order_id]

    def kept(self, order_id: str) -> list[str]:
        """What a consumer applies of `order_id`: each event id once, and (as payments) only a higher sequence."""
        seen: set[str] = set()
        kept, newest = [], 0
        for order, event_id, sequence, status in self.of:
            if order != order_id:
                continue
            if event_id not in seen and sequence > newest:
                kept.append(status)
                newest = sequence
            seen.add(event_id)
        return kept

    def check(self, *order_ids: str) -> None:
        """Consumers end at the stored status of every order, no sequence names two statuses of one order, and the
        stored sequence is the highest announced."""
        for order_id in order_ids:
            stored = self.worker.stored(order_id)
            assert stored is not None, order_id
            landed = self.landed_of(order_id)
            kept = self.kept(order_id)
            assert kept and kept[-1] == stored.status.value, f"{order_id}: kept {kept}, landed {landed}"
            named: dict[int, set[str]] = {}
            for sequence, status in landed:
                named.setdefault(sequence, set()).add(status)
            shared = {s: v for s, v in named.items() if len(v) > 1}
            assert not shared, f"{order_id}: sequences naming two statuses {shared}, landed {landed}"
            assert stored.sequence == max(s for s, _ in landed), f"{order_id}: stored #{stored.sequence}, {landed}"


async def flagged_in_an_undone_round() -> tuple[Worker, Broker]:
    """A worker whose order o1, paid 30 s ago, was flagged in a round the broker refused in part: `delayed` #1
    landed, RetryCredit #1 was refused, the round is undone. The broker takes everything again."""
    worker = Worker(POLICY)
    await worker.batch(worker.record(paid("o1", seconds_ago=30)))
    broker = Broker(worker)
    broker.refusing = True
    await worker.tick()
    broker.refusing = False
    return worker, broker
