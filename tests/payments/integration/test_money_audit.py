"""The money audit on the real broker and PostgreSQL: payments and the ledger as built for production, the
ledger's bulk read served over real HTTP. A PaymentSucceeded is deleted from the topic before the ledger reads
it (by test design: the loss no producer setting prevents, a broker losing an acknowledged record); the audit
finds the order paid and never credited, re-announces its payment, and the ledger credits it once."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from contracts.topics import Topic
from credited import cli
from credited.stack.processes import free_port
from ledger.bootstrap import build as build_ledger
from ledger.config import Settings as LedgerSettings
from payments.adapters.audit_books import PostgresAuditBooks
from payments.adapters.auditor import AuditMetrics, Auditor
from payments.adapters.ledger_credits import LedgerCredits
from payments.adapters.postgres import PostgresPayments
from payments.bootstrap import build as build_payments
from payments.config import Settings as PaymentsSettings
from servicekit.http import serve
from servicekit.identity import Scope
from servicekit.infrastructure import Infrastructure
from servicekit.uow import no_relay
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.kafka_reader import event_types, eventually, read_until
from tests.payments.sim_callbacks import paid_notice, signed
from tests.service_settings import settings_for

SECRET = "audit-test-secret"


@dataclass
class Stack:
    payments: httpx.AsyncClient
    ledger: httpx.AsyncClient
    payments_infra: Infrastructure
    payments_url: str
    ledger_infra: Infrastructure
    settings: PaymentsSettings
    tasks: list["asyncio.Task[None]"]

    async def start_ledger_consumers(self) -> None:
        for consumer in self.ledger_infra.consumers:
            await consumer.start()
        self.tasks += [asyncio.create_task(c.run()) for c in self.ledger_infra.consumers]

    async def paid_order(self, user: str, paid_at: datetime | None = None) -> str:
        placed = await self.payments.post(
            "/v1/orders", json={"user_id": user, "amount": 600, "currency": "CNY", "channel": "alipay"}
        )
        assert placed.status_code == 201, placed.text
        order_id = str(placed.json()["order_id"])
        body = paid_notice(order_id, paid_at=paid_at)
        paid = await self.payments.post("/v1/psp/sim/callbacks", content=body, headers=signed(SECRET, body))
        assert paid.json()["result"] == "applied", paid.text
        return order_id

    async def credits(self, order_id: str) -> int:
        entries = (await self.ledger.get(f"/v1/orders/{order_id}/entries")).json()["transactions"]
        return sum(1 for t in entries if t["kind"] == "credit")

    async def audit(self) -> dict[str, Any]:
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        answer = await self.payments.post("/v1/audits", json={"since": since})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture
async def stack(
    broker: Broker, database_url: str, isolation: str, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """Payments and the ledger; the audit's grace is 0 (every uncredited order judged at once) unless the test
    asks for another (`indirect` parametrisation)."""
    ledger_infra, ledger_app = await build_ledger(settings_for(LedgerSettings, broker, database_url, isolation))
    port = free_port()
    tasks = [asyncio.create_task(serve(ledger_app, "127.0.0.1", port)), asyncio.create_task(ledger_infra.relay.run())]
    audit_key = (await bearer(ledger_infra.keys))["Authorization"].removeprefix("Bearer ")
    settings = settings_for(
        PaymentsSettings,
        broker,
        database_url,
        isolation,
        psp_secrets={"sim": [SECRET]},
        environment="development",
        audit_ledger_url=f"http://127.0.0.1:{port}",
        audit_ledger_api_key=audit_key,
        audit_grace_s=getattr(request, "param", 0),
    )
    payments_infra, payments_app = await build_payments(settings)
    payments_port = free_port()
    tasks.append(asyncio.create_task(payments_infra.relay.run()))
    tasks.append(asyncio.create_task(serve(payments_app, "127.0.0.1", payments_port)))
    headers = await bearer(payments_infra.keys)
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=payments_app), base_url="http://payments", headers=headers
        ) as payments,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as ledger,
    ):
        await eventually(lambda: _answers(f"http://127.0.0.1:{port}"), timeout_s=30)
        payments_url = f"http://127.0.0.1:{payments_port}"
        await eventually(lambda: _answers(payments_url), timeout_s=30)
        yield Stack(payments, ledger, payments_infra, payments_url, ledger_infra, settings, tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for infra in (payments_infra, ledger_infra):
        with contextlib.suppress(Exception):
            await infra.close()


async def _answers(base_url: str) -> bool:
    async with httpx.AsyncClient(base_url=base_url) as client:
        try:
            return (await client.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False


async def delete_everything(bootstrap: str, topic: str) -> None:
    """Every record now on `topic` deleted (its log start moved to its end), as if the broker had lost them. Needs
    Apache Kafka: the embedded Tansu does not implement DeleteRecords (it closes the connection)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        ends = await _end_offsets(bootstrap, topic)
        assert sum(ends.values()) > 0
        await admin.delete_records({tp: RecordsToDelete(before_offset=end) for tp, end in ends.items() if end})
    finally:
        await admin.close()


async def _end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


def gauge(registry: CollectorRegistry, kind: str) -> float | None:
    return registry.get_sample_value("payments_audit_mismatches", {"kind": kind})


async def test_the_audit_re_drives_a_payment_deleted_from_the_topic_and_the_ledger_credits_it_once(
    stack: Stack, broker: Broker
) -> None:
    topic = Topic.PAYMENTS_EVENTS.qualified(stack.settings.topic_prefix)
    lost = await stack.paid_order("u-lost")
    await read_until(broker.bootstrap, topic, lambda r: "PaymentSucceeded" in event_types(r))
    await delete_everything(broker.bootstrap, topic)
    await stack.start_ledger_consumers()
    # An order paid after the loss is credited: the ledger has read past where the lost record was.
    kept = await stack.paid_order("u-kept")
    await eventually(lambda: stack.credits(kept), timeout_s=60)
    assert await stack.credits(lost) == 0

    first = await stack.audit()

    assert [(f["order_id"], f["kind"]) for f in first["findings"]] == [(lost, "missing_credit")]
    assert first["redriven"] == [lost]
    assert first["counts"]["missing_credit"] == 1
    assert gauge(stack.payments_infra.registry, "missing_credit") == 1
    assert stack.payments_infra.registry.get_sample_value("payments_audit_redriven_total") == 1
    await eventually(lambda: stack.credits(lost), timeout_s=60)

    second = await stack.audit()

    assert second["findings"] == [] and second["redriven"] == []
    assert all(n == 0 for n in second["counts"].values())
    assert gauge(stack.payments_infra.registry, "missing_credit") == 0
    assert second["paid"] == second["credited"] == {"CNY": 1200}
    assert [await stack.credits(o) for o in (lost, kept)] == [1, 1]


async def test_the_bulk_reads_walk_a_window_page_by_page_each_row_once(stack: Stack) -> None:
    await stack.start_ledger_consumers()
    orders = [await stack.paid_order(f"u{i}") for i in range(5)]
    for order_id in orders:
        await eventually(lambda o=order_id: stack.credits(o), timeout_s=60)  # type: ignore[misc]
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()

    paid = await _walk(stack.payments, "/v1/audit/payments", "orders", since, until)
    credited = await _walk(stack.ledger, "/v1/audit/credits", "credits", since, until)

    assert [o["order_id"] for o in paid] == orders  # paid in this order, one page each
    assert sorted(c["order_id"] for c in credited) == sorted(orders)
    assert {(c["user_id"], c["amount"], c["currency"]) for c in credited} == {(f"u{i}", 600, "CNY") for i in range(5)}
    bad = await stack.ledger.get("/v1/audit/credits", params={"since": since, "until": until, "after": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_cursor"
    backwards = await stack.payments.get("/v1/audit/payments", params={"since": until, "until": since})
    assert backwards.status_code == 400 and backwards.json()["error"] == "empty_window"


async def _walk(client: httpx.AsyncClient, path: str, field: str, since: str, until: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"since": since, "until": until, "limit": 2}
    while True:
        page = await client.get(path, params=params)
        assert page.status_code == 200, page.text
        rows += page.json()[field]
        if page.json()["next"] is None:
            return rows
        params["after"] = page.json()["next"]


async def test_credited_audit_prints_the_lost_order_it_re_drove_then_finds_nothing(
    stack: Stack, broker: Broker
) -> None:
    topic = Topic.PAYMENTS_EVENTS.qualified(stack.settings.topic_prefix)
    lost = await stack.paid_order("u-lost")
    await read_until(broker.bootstrap, topic, lambda r: "PaymentSucceeded" in event_types(r))
    await delete_everything(broker.bootstrap, topic)
    await stack.start_ledger_consumers()
    key = (await bearer(stack.payments_infra.keys, Scope.AUDIT_RUN))["Authorization"].removeprefix("Bearer ")
    argv = ["audit", "--since", "1h", "--url", stack.payments_url, "--key", key]

    found = await asyncio.to_thread(CliRunner().invoke, cli.app, argv)

    assert found.exit_code == 1, found.output
    row = next(line for line in found.output.splitlines() if lost in line)
    assert "missing_credit" in row and "yes" in row
    assert "1 found, 1 re-driven" in found.output
    await eventually(lambda: stack.credits(lost), timeout_s=60)

    clean = await asyncio.to_thread(CliRunner().invoke, cli.app, [*argv, "--json"])

    assert clean.exit_code == 0, clean.output
    answer = json.loads(clean.output)
    assert answer["findings"] == [] and answer["redriven"] == [] and answer["credited"] == {"CNY": 600}


@pytest.mark.parametrize("stack", [180], indirect=True)  # the default grace
async def test_a_late_callback_is_in_flight_for_the_grace_from_when_payments_recorded_it_not_missing(
    stack: Stack,
) -> None:
    await stack.start_ledger_consumers()
    # The provider's callback arrives late: paid 10 minutes ago by its clock, recorded by payments just now.
    late = await stack.paid_order("u-late", paid_at=datetime.now(UTC) - timedelta(minutes=10))
    found = await stack.audit()
    assert found["findings"] == [] and found["redriven"] == [], found
    assert found["in_grace"] == 1
    await eventually(lambda: stack.credits(late), timeout_s=60)  # the ledger credits it, as it always would
    assert (await stack.audit())["findings"] == []


async def test_an_audit_of_a_window_payments_accepts_is_answered_not_refused_by_the_ledger(stack: Stack) -> None:
    """POST /v1/audits takes any window of up to 31 days: last month's first week, or the last 31 days. The audit
    reads the ledger's credits from 15 minutes before the window to now, which the ledger answers 31 days at a
    time: payments reads it in stretches."""
    now = datetime.now(UTC)
    windows = {
        "last month's first week": (now - timedelta(days=40), now - timedelta(days=33)),
        "the last 31 days": (now - timedelta(days=31) + timedelta(minutes=1), None),
    }
    answers = {}
    for name, (since, until) in windows.items():
        body = {"since": since.isoformat()} | ({} if until is None else {"until": until.isoformat()})
        answer = await stack.payments.post("/v1/audits", json=body)
        answers[name] = (answer.status_code, answer.json().get("error"))

    assert answers == dict.fromkeys(windows, (200, None))


async def test_a_scheduled_audit_over_the_longest_window_the_settings_take_reads_the_ledger_to_now(
    stack: Stack, broker: Broker, database_url: str, isolation: str
) -> None:
    """PAYMENTS_AUDIT_WINDOW_S takes up to 31 days; a scheduled audit over it must run, not fail at every tick
    (MoneyAuditStale) because its ledger read spans 31 days and 15 minutes, and must find the credit of an order
    paid now, in the read's last stretch."""
    settings = settings_for(
        PaymentsSettings,
        broker,
        database_url,
        isolation,
        audit_ledger_url=stack.settings.audit_ledger_url,
        audit_ledger_api_key=stack.settings.audit_ledger_api_key,
        audit_window_s=31 * 86400,  # the most the settings take
    )
    await stack.start_ledger_consumers()
    order_id = await stack.paid_order("u-now")
    await eventually(lambda: stack.credits(order_id), timeout_s=60)
    pool = stack.payments_infra.pool
    books = PostgresAuditBooks(
        pool, lambda: PostgresPayments(pool, producer="payments", topic_prefix="", on_commit=no_relay)
    )
    assert settings.audit_ledger_url is not None and settings.audit_ledger_api_key is not None
    credits = LedgerCredits(settings.audit_ledger_url, settings.audit_ledger_api_key.get_secret_value())
    auditor = Auditor(
        books, credits, AuditMetrics(CollectorRegistry()), interval_s=300, window_s=settings.audit_window_s, grace_s=0
    )
    try:
        outcome = await auditor.run(datetime.now(UTC) - timedelta(seconds=settings.audit_window_s))
    finally:
        await credits.close()

    assert outcome.findings == []
    assert outcome.report.paid == outcome.report.credited == {"CNY": 600}
