"""What the console's end-to-end tests share: support keys made with `credited keys create`, a paid order and
one held for review, a case opened the way the reconciler opens one, and the console as its own process."""

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from contracts.codec import encode, envelope_for
from contracts.events import CaseKind, CaseRequested, CaseSeverity
from contracts.topics import Topic
from credited.stack.local import LocalStack
from credited.stack.processes import free_port
from servicekit.kafka import KafkaPublisher
from tests.conftest import Broker
from tests.e2e.stack import paid_order as e2e_paid_order
from tests.kafka_reader import eventually

CREDITED = Path(sys.executable).parent / "credited"
REVIEW_ABOVE = 50_000
"""A first top-up above this (minor units) is held for risk review: an order that stays paid and uncredited."""


def credited(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `credited` command as a person runs it."""
    return subprocess.run(
        [str(CREDITED), *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def make_key(stack: LocalStack, name: str, *scopes: str) -> str:
    """A key made with `credited keys create` in the stack's identity schema."""
    scope_args = [arg for scope in scopes for arg in ("--scope", scope)]
    made = credited(
        "keys",
        "create",
        "--name",
        name,
        *scope_args,
        "--database-url",
        stack.database_url,
        "--schema",
        stack.config.identity_schema,
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


async def support_cases_topic(broker: Broker, prefix: str, partitions: int) -> None:
    """The topic the reconciler writes cases to, made ahead of the stack (the stack may make it too)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(Topic.SUPPORT_CASES.qualified(prefix), partitions, 1)])
    finally:
        await admin.close()


async def paid_order(client: httpx.AsyncClient, stack: LocalStack, user_id: str, amount: int) -> str:
    """Place an order for `user_id` and have the local provider confirm its payment, paid at a fixed past time."""
    return await e2e_paid_order(client, stack, user_id, amount, paid_at="2026-11-22T08:30:00Z")


async def open_case(broker: Broker, prefix: str, order_id: str, user_id: str) -> None:
    """Ask payments for a case on the order, as the reconciler does for a review past its expected time."""
    case = CaseRequested(
        order_id=order_id,
        user_id=user_id,
        kind=CaseKind.REVIEW_OVERDUE,
        severity=CaseSeverity.WARNING,
        reason="review past its expected time",
        requested_at=datetime.now(UTC),
    )
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="console-test")
    await publisher.start()
    try:
        envelope = envelope_for(case, producer="reconciler", event_id=f"case-{uuid.uuid4().hex}")
        await publisher.publish_many([(Topic.SUPPORT_CASES.qualified(prefix), encode(case, envelope))])
    finally:
        await publisher.stop()


async def order_view(client: httpx.AsyncClient, stack: LocalStack, order_id: str) -> dict[str, Any]:
    answer = await client.get(f"{stack.url('payments')}/v1/support/orders/{order_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def in_timeline(client: httpx.AsyncClient, stack: LocalStack, order_id: str, source: str, kind: str) -> None:
    """Until the order's timeline has an entry of `kind` from `source`."""

    async def there() -> bool:
        timeline = (await order_view(client, stack, order_id))["timeline"]
        return any(e["source"] == source and e["kind"] == kind for e in timeline)

    await eventually(there, timeout_s=90)


async def credit_in_timeline(client: httpx.AsyncClient, stack: LocalStack, order_id: str) -> None:
    """Until the order's timeline shows the ledger's credit. Payments' own status of the order follows when the
    reconciler's status change reaches it, which may be later."""
    await in_timeline(client, stack, order_id, "ledger", "credit")


@contextlib.contextmanager
def console_process(payments_url: str, log_path: Path) -> Iterator[str]:
    """`credited console` on a free port; its URL once it answers."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(CREDITED), "console", "--payments-url", payments_url, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log_path.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/signin", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the console did not answer within 60 s"
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
