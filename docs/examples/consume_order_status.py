"""Follow credited's `orders.status` from another system with aiokafka and the `contracts` package.

    pip install packages/contracts aiokafka
    python docs/examples/consume_order_status.py --bootstrap localhost:9094 --group my-platform.order-status

Against a broker that admits only authenticated clients (docker compose's), set KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT,
KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (KAFKA_SASL_MECHANISM: SCRAM-SHA-512), as for credited's services.

Prints one JSON line per status change. What a reader of this topic must do, and this one does:
- read in a consumer group of its own, and commit offsets only after the changes are handled;
- decode each record once (`contracts.decode`): a record that does not decode is reported and skipped, never
  allowed to stop the loop (a real system would send it to its own dead-letter topic);
- expect repeats and late arrivals: keep the highest `sequence` per order and ignore anything at or below it
  (here in memory; a real system keeps it in its database, in the transaction that acts on the change).
"""

import argparse
import asyncio
import json
import os
import sys

from aiokafka import AIOKafkaConsumer

from contracts import DecodeError, OrderStatusChanged, Topic, decode


def kafka_security() -> dict[str, str]:
    """aiokafka's options from the settings credited's services read: KAFKA_SECURITY_PROTOCOL (PLAINTEXT unless
    set), KAFKA_SASL_MECHANISM (SCRAM-SHA-512), KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD. docker compose's brokers
    admit only authenticated clients."""
    protocol = os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return {}
    return {
        "security_protocol": protocol,
        "sasl_mechanism": os.environ.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        "sasl_plain_username": os.environ["KAFKA_SASL_USERNAME"],
        "sasl_plain_password": os.environ["KAFKA_SASL_PASSWORD"],
    }


async def follow(bootstrap: str, topic: str, group: str, *, stop_after: int | None, idle_s: float | None) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kafka_security(),
    )
    await consumer.start()
    newest: dict[str, int] = {}
    shown = 0
    loop = asyncio.get_running_loop()
    last_record_at = loop.time()
    try:
        while stop_after is None or shown < stop_after:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                last_record_at = loop.time()
                for record in records:
                    shown += handle(record.value, record.headers, newest)
            if batch:
                await consumer.commit()
            if idle_s is not None and loop.time() - last_record_at > idle_s:
                break
    finally:
        await consumer.stop()


def handle(value: bytes | None, headers: list[tuple[str, bytes]], newest: dict[str, int]) -> int:
    """Print the change if it is news; 1 if printed, else 0."""
    try:
        message, envelope = decode(value, headers)
    except DecodeError as exc:
        print(f"skipped a record that does not decode: {exc.reason}", file=sys.stderr)
        return 0
    if not isinstance(message, OrderStatusChanged) or message.sequence <= newest.get(message.order_id, 0):
        return 0
    newest[message.order_id] = message.sequence
    line = {
        "order_id": message.order_id,
        "user_id": message.user_id,
        "status": message.status.value,
        "sequence": message.sequence,
        "amount": message.amount,
        "currency": message.currency,
        "changed_at": message.changed_at.isoformat(),
        "event_id": envelope.event_id,
    }
    print(json.dumps(line), flush=True)
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="localhost:9094")
    parser.add_argument("--topic", default=Topic.ORDERS_STATUS.value)
    parser.add_argument("--group", required=True, help="your own consumer group")
    parser.add_argument("--stop-after", type=int, help="stop after printing this many changes")
    parser.add_argument("--idle-s", type=float, help="stop when nothing arrived for this many seconds")
    args = parser.parse_args()
    asyncio.run(follow(args.bootstrap, args.topic, args.group, stop_after=args.stop_after, idle_s=args.idle_s))


if __name__ == "__main__":
    main()
