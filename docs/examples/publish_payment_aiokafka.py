"""Publish one PaymentSucceeded into credited from another system with aiokafka and the `contracts` package.

    pip install packages/contracts aiokafka
    python docs/examples/publish_payment_aiokafka.py --bootstrap localhost:9094 \
        --order-id ord_123 --user-id user_1 --amount 600 --currency CNY --channel alipay \
        --provider alipay --provider-txn-id 2026112200001

Against a broker that admits only authenticated clients (docker compose's), set KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT,
KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (KAFKA_SASL_MECHANISM: SCRAM-SHA-512), as for credited's services.

The model validates the payment before anything is sent; `encode` gives the key (the order id), the JSON
value and the envelope headers, exactly as credited's own services write them.
"""

import argparse
import asyncio
import os
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from contracts import PaymentSucceeded, Topic, encode
from contracts.codec import deterministic_id, envelope_for


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


async def publish(bootstrap: str, topic: str, payment: PaymentSucceeded, *, idempotence: bool) -> str:
    """Send `payment` and wait until the broker has it on every in-sync replica; return its event id."""
    # One event id per fact: a retry of this same payment carries the same id, so credited drops the repeat.
    event_id = deterministic_id("PaymentSucceeded", payment.provider, payment.provider_txn_id)
    record = encode(payment, envelope_for(payment, producer="example-platform", event_id=event_id))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotence, **kafka_security()
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, record.value, key=record.key, headers=record.headers)
    finally:
        await producer.stop()
    return event_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="localhost:9094")
    parser.add_argument("--topic", default=Topic.PAYMENTS_EVENTS.value)
    parser.add_argument("--order-id", required=True)
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--amount", type=int, required=True, help="minor units: 600 CNY is 6.00 yuan")
    parser.add_argument("--currency", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--provider", required=True)
    parser.add_argument("--provider-txn-id", required=True)
    parser.add_argument("--no-idempotence", action="store_true", help="for brokers that refuse it (Tansu)")
    args = parser.parse_args()
    payment = PaymentSucceeded(
        order_id=args.order_id,
        user_id=args.user_id,
        amount=args.amount,
        currency=args.currency,
        channel=args.channel,
        provider=args.provider,
        provider_txn_id=args.provider_txn_id,
        paid_at=datetime.now(UTC),
    )
    event_id = asyncio.run(publish(args.bootstrap, args.topic, payment, idempotence=not args.no_idempotence))
    print(f"published PaymentSucceeded for {payment.order_id} to {args.topic} (event {event_id})")


if __name__ == "__main__":
    main()
