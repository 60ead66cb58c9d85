"""A process that uses the real unit of work and outbox relay, for the crash tests: it prints where it is and
waits there, so the test can SIGKILL it at exactly that point.

    python -m tests.servicekit.outbox_child commit DSN SCHEMA PREFIX BOOTSTRAP IDEMPOTENCE ORDER_ID...
        commits one PaymentSucceeded per order id, prints "committed" and waits (no relay has run)
    python -m tests.servicekit.outbox_child relay DSN SCHEMA PREFIX BOOTSTRAP IDEMPOTENCE
        runs the relay until the outbox is empty, prints "drained" and exits
    python -m tests.servicekit.outbox_child relay-then-hang ...
        claims and publishes one batch, prints "published" once the broker acknowledged it, and waits before
        the relay deletes the rows
"""

import asyncio
import sys

from contracts.topics import Topic
from servicekit.kafka import KafkaPublisher
from servicekit.outbox import OutboxRelay
from servicekit.postgres import create_pool, migrate
from servicekit.uow import PostgresUnitOfWork, no_relay
from tests.servicekit.events import paid


def _say(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


class _HangAfterAck(KafkaPublisher):
    async def send_each(self, entries):  # type: ignore[no-untyped-def]
        sends = await super().send_each(entries)
        asyncio.gather(*sends).add_done_callback(lambda _: _say("published"))

        async def acknowledged_then_hang(send):  # type: ignore[no-untyped-def]
            await send
            await asyncio.Event().wait()

        return [asyncio.ensure_future(acknowledged_then_hang(send)) for send in sends]


async def main(mode: str, dsn: str, schema: str, prefix: str, bootstrap: str, idempotence: str, *orders: str) -> None:
    pool = await create_pool(dsn, schema, min_size=1, max_size=2)
    await migrate(pool)
    if mode == "commit":
        async with PostgresUnitOfWork(pool, producer="crash-test", topic_prefix=prefix, on_commit=no_relay) as tx:
            for order_id in orders:
                tx.publish(Topic.PAYMENTS_EVENTS, paid(order_id))
        _say("committed")
        await asyncio.Event().wait()
    publisher_class = _HangAfterAck if mode == "relay-then-hang" else KafkaPublisher
    publisher = publisher_class(bootstrap, idempotence=idempotence == "1", client_id="crash-test", topic_prefix=prefix)
    await publisher.start()
    relay = OutboxRelay(pool, publisher)
    while await relay.publish_batch():
        pass
    _say("drained")
    await publisher.stop()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
