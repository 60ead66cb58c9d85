"""Support cases on the real broker and PostgreSQL: a CaseRequested on support.cases opens one case per order and
kind (a repeat opens nothing), people act on it through the cases API with their key's name in its history, a
settled order (orders.status) resolves it by itself, and an unacknowledged case re-pages one step at a time."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from contracts.base import Message
from contracts.codec import encode, envelope_for
from contracts.events import CaseKind, CaseRequested, CaseSeverity, OrderStatus, OrderStatusChanged
from contracts.topics import Topic
from payments.adapters.case_watch import CaseWatch
from payments.adapters.metrics import SupportCaseMetrics
from payments.adapters.orders import PostgresStatusBook
from payments.bootstrap import build
from payments.config import Settings
from payments.ports import StatusChange
from servicekit.identity import Scope
from servicekit.infrastructure import Infrastructure
from servicekit.kafka import KafkaPublisher
from servicekit.signatures import sign
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.service_settings import settings_for

ORDER = """
INSERT INTO orders (order_id, user_id, amount, currency, channel, payment_status, status, provider, provider_txn_id,
                    created_at, paid_at)
VALUES ($1, 'u1', 600, 'CNY', 'alipay', 'succeeded', 'needs_support', 'sim', 'tx-' || $1, now(), now())
"""
ACTION = """
INSERT INTO support_actions (order_id, action, reason, actor_key_id, actor_name, at)
VALUES ($1, 'redrive_credit', 'ledger block lifted', 'k1', 'alice', now())
"""
AGENT = "agent-alice"


@dataclass
class Payments:
    infra: Infrastructure
    app: FastAPI
    settings: Settings
    client: httpx.AsyncClient
    publisher: KafkaPublisher

    async def send(self, topic: Topic, message: Message, event_id: str) -> None:
        envelope = envelope_for(message, producer="reconciler", event_id=event_id)
        await self.publisher.publish_many([(topic.qualified(self.settings.topic_prefix), encode(message, envelope))])

    async def count(self, query: str, *args: Any) -> int:
        return int(await self.infra.pool.fetchval(query, *args))


@pytest.fixture
async def payments(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[Payments]:
    settings = settings_for(
        Settings,
        broker,
        database_url,
        isolation,
        psp_secrets={"sim": ["s"]},
        environment="development",
        case_repage_after_s=0.5,
    )
    infra, app = await build(settings)
    publisher = KafkaPublisher(broker.bootstrap, idempotence=broker.idempotence, client_id="test")
    await publisher.start()
    for consumer in infra.consumers:
        await consumer.start()
    tasks = [asyncio.create_task(c.run()) for c in infra.consumers]
    _, key = await infra.keys.create(AGENT, {Scope.SUPPORT_READ, Scope.SUPPORT_ACT})
    headers = {"Authorization": f"Bearer {key}"}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://payments", headers=headers) as client:
            yield Payments(infra, app, settings, client, publisher)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await publisher.stop()
        with contextlib.suppress(Exception):
            await infra.close()


def requested(
    order_id: str,
    severity: CaseSeverity = CaseSeverity.PAGE,
    reason: str = "refund failed",
    kind: CaseKind = CaseKind.NEEDS_SUPPORT,
) -> CaseRequested:
    return CaseRequested(
        order_id=order_id,
        user_id="u1",
        kind=kind,
        severity=severity,
        reason=reason,
        requested_at=datetime.now(UTC),
    )


async def opened_case(p: Payments, order_id: str, severity: CaseSeverity = CaseSeverity.PAGE) -> int:
    await p.send(Topic.SUPPORT_CASES, requested(order_id, severity), f"case-{order_id}")
    query = "SELECT count(*) = 1 FROM support_cases WHERE order_id = $1"
    await eventually(lambda: p.infra.pool.fetchval(query, order_id), timeout_s=60)
    return int(await p.infra.pool.fetchval("SELECT id FROM support_cases WHERE order_id = $1", order_id))


async def test_a_case_request_opens_one_case_and_a_repeat_adds_only_a_history_line(payments: Payments) -> None:
    p = payments
    await p.infra.pool.execute(ORDER, "ord_a")
    case_id = await opened_case(p, "ord_a")
    await p.send(Topic.SUPPORT_CASES, requested("ord_a"), "case-ord_a")  # the same event again: nothing
    await p.send(Topic.SUPPORT_CASES, requested("ord_a", reason="refund failed again"), "case-ord_a-2")
    await p.send(Topic.SUPPORT_CASES, requested("ord_b"), "case-ord_b")  # a later marker on the same topic
    await eventually(lambda: p.infra.pool.fetchval("SELECT count(*) = 1 FROM support_cases WHERE order_id = 'ord_b'"))
    assert await p.count("SELECT count(*) FROM support_cases WHERE order_id = 'ord_a'") == 1
    answer = await p.client.get(f"/v1/support/cases/{case_id}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["order_id"], body["kind"], body["severity"], body["owner"]) == ("ord_a", "needs_support", "page", None)
    assert [(h["actor"], h["action"]) for h in body["history"]] == [("credited", "opened"), ("credited", "noted")]
    assert "refund failed again" in body["history"][1]["detail"]
    opened = p.infra.registry.get_sample_value("payments_support_cases_opened_total", {"kind": "needs_support"})
    assert opened == 2


async def test_people_acknowledge_assign_note_and_resolve_a_case_under_their_key_name(payments: Payments) -> None:
    p = payments
    await p.infra.pool.execute(ORDER, "ord_c")
    case_id = await opened_case(p, "ord_c")
    name = AGENT
    url = f"/v1/support/cases/{case_id}"
    acked = await p.client.post(f"{url}/acknowledge", json={"note": "on it"})
    assert acked.status_code == 200, acked.text
    assert (acked.json()["owner"], acked.json()["acknowledged_by"]) == (name, name)
    assigned = await p.client.post(f"{url}/assign", json={"owner": "bob"})
    assert assigned.json()["owner"] == "bob"
    noted = await p.client.post(f"{url}/notes", json={"note": "user called"})
    assert noted.status_code == 200, noted.text
    resolved = await p.client.post(f"{url}/resolve", json={"resolution": "refunded by hand"})
    assert (resolved.json()["resolved_by"], resolved.json()["resolution"]) == (name, "refunded by hand")
    again = await p.client.post(f"{url}/resolve", json={"resolution": "twice"})
    assert (again.status_code, again.json()["error"]) == (409, "case_resolved")
    history = (await p.client.get(url)).json()["history"]
    assert [(h["actor"], h["action"], h["detail"]) for h in history[1:]] == [
        (name, "acknowledged", "on it"),
        (name, "assigned", "bob"),
        (name, "noted", "user called"),
        (name, "resolved", "refunded by hand"),
    ]
    assert (await p.client.get("/v1/support/cases")).json()["cases"] == []
    listed = (await p.client.get("/v1/support/cases", params={"state": "resolved"})).json()["cases"]
    assert [c["id"] for c in listed] == [case_id]
    missing = await p.client.post("/v1/support/cases/999999/acknowledge", json={})
    assert (missing.status_code, missing.json()["error"]) == (404, "unknown_case")


async def test_reading_needs_support_read_and_acting_needs_support_act(payments: Payments) -> None:
    p = payments
    await p.infra.pool.execute(ORDER, "ord_d")
    case_id = await opened_case(p, "ord_d")
    reader = await bearer(p.infra.keys, Scope.SUPPORT_READ)
    assert (await p.client.get("/v1/support/cases", headers=reader)).status_code == 200
    refused = await p.client.post(f"/v1/support/cases/{case_id}/resolve", json={"resolution": "x"}, headers=reader)
    assert (refused.status_code, refused.json()["error"]) == (403, "insufficient_scope")
    anonymous = await p.client.get("/v1/support/cases", headers={"Authorization": ""})
    assert anonymous.status_code == 401, anonymous.text
    assert await p.count("SELECT count(*) FROM support_cases WHERE resolved_at IS NOT NULL") == 0


def status_changed(order_id: str, status: OrderStatus, sequence: int) -> OrderStatusChanged:
    now = datetime.now(UTC)
    return OrderStatusChanged(
        order_id=order_id,
        user_id="u1",
        status=status,
        sequence=sequence,
        amount=600,
        currency="CNY",
        channel="alipay",
        paid_at=now,
        changed_at=now,
    )


async def test_an_order_credited_after_a_redrive_resolves_its_open_case_naming_the_action(payments: Payments) -> None:
    p = payments
    await p.infra.pool.execute(ORDER, "ord_e")
    case_id = await opened_case(p, "ord_e")
    ghost = requested("ord_e", reason="credited without payment", kind=CaseKind.CREDIT_WITHOUT_PAYMENT)
    await p.send(Topic.SUPPORT_CASES, ghost, "case-ord_e-ghost")
    await eventually(lambda: p.infra.pool.fetchval("SELECT count(*) = 2 FROM support_cases WHERE order_id = 'ord_e'"))
    await p.infra.pool.execute(ACTION, "ord_e")
    await p.send(Topic.ORDERS_STATUS, status_changed("ord_e", OrderStatus.CREDITED, 7), "status-ord_e-7")
    query = "SELECT resolved_at IS NOT NULL FROM support_cases WHERE id = $1"
    await eventually(lambda: p.infra.pool.fetchval(query, case_id), timeout_s=60)
    case = (await p.client.get(f"/v1/support/cases/{case_id}")).json()
    assert (case["resolved_by"], case["resolution"]) == (
        "credited",
        "credited after redrive_credit by alice: ledger block lifted",
    )
    assert case["history"][-1]["action"] == "resolved"
    still_open = (await p.client.get("/v1/support/cases", params={"kind": "credit_without_payment"})).json()["cases"]
    assert [c["order_id"] for c in still_open] == ["ord_e"]  # a person says how a credit nobody paid for ended
    assert await p.count("SELECT count(*) FROM orders WHERE order_id = 'ord_e' AND status = 'credited'") == 1


async def test_an_unacknowledged_case_repages_one_step_at_a_time_once_per_step(payments: Payments) -> None:
    p = payments
    await p.infra.pool.execute(ORDER, "ord_f")
    case_id = await opened_case(p, "ord_f", CaseSeverity.WARNING)
    registry = CollectorRegistry()
    metrics = SupportCaseMetrics(registry)
    watches = [CaseWatch(p.infra.pool, metrics, repage_after_s=0.5) for _ in range(3)]

    async def severity() -> str:
        return str(await p.infra.pool.fetchval("SELECT severity FROM support_cases WHERE id = $1", case_id))

    await eventually(lambda: _stepped(watches, severity, "page"), timeout_s=10)
    await eventually(lambda: _stepped(watches, severity, "critical"), timeout_s=10)
    await asyncio.sleep(0.6)
    assert sum(await asyncio.gather(*(w.repage() for w in watches))) == 0  # critical has nowhere to go
    history = (await p.client.get(f"/v1/support/cases/{case_id}")).json()["history"]
    assert [h["detail"].split(":")[0] for h in history if h["action"] == "repaged"] == [
        "warning -> page",
        "page -> critical",
    ]
    await watches[0].refresh()
    series = {"kind": "needs_support", "severity": "critical", "acknowledged": "false"}
    assert registry.get_sample_value("payments_support_cases_open", series) == 1
    series = {**series, "severity": "warning"}
    assert registry.get_sample_value("payments_support_cases_open", series) == 0
    repaged = {"kind": "needs_support", "severity": "critical"}
    assert registry.get_sample_value("payments_support_cases_repaged_total", repaged) == 1


async def _stepped(watches: list[CaseWatch], severity: Any, to: str) -> bool:
    """Every watch at once (as several payments processes would): True once the case stands at `to`."""
    await asyncio.gather(*(w.repage() for w in watches))
    return bool(await severity() == to)


async def test_an_acknowledged_case_is_not_repaged(payments: Payments) -> None:
    p = payments
    await p.infra.pool.execute(ORDER, "ord_g")
    case_id = await opened_case(p, "ord_g", CaseSeverity.PAGE)
    assert (await p.client.post(f"/v1/support/cases/{case_id}/acknowledge", json={})).status_code == 200
    await asyncio.sleep(0.6)
    watch: CaseWatch = p.app.state.case_watch
    assert await watch.repage() == 0
    assert (await p.client.get(f"/v1/support/cases/{case_id}")).json()["severity"] == "page"


async def test_open_cases_are_listed_critical_first_then_oldest_first_and_filtered(payments: Payments) -> None:
    p = payments
    for order_id, severity in (
        ("ord_w", CaseSeverity.WARNING),
        ("ord_p1", CaseSeverity.PAGE),
        ("ord_c", CaseSeverity.CRITICAL),
        ("ord_p2", CaseSeverity.PAGE),
    ):
        await p.infra.pool.execute(ORDER, order_id)
        await opened_case(p, order_id, severity)
    listed = (await p.client.get("/v1/support/cases")).json()["cases"]
    assert [c["order_id"] for c in listed] == ["ord_c", "ord_p1", "ord_p2", "ord_w"]
    pages = (await p.client.get("/v1/support/cases", params={"severity": "page"})).json()["cases"]
    assert [c["order_id"] for c in pages] == ["ord_p1", "ord_p2"]
    bad = await p.client.get("/v1/support/cases", params={"state": "lost"})
    assert bad.status_code == 422 and bad.json()["error"], bad.text


async def test_a_poll_of_status_changes_is_applied_in_one_statement_as_if_one_by_one(payments: Payments) -> None:
    p = payments
    for order_id in ("ord_g", "ord_h"):
        await p.infra.pool.execute(ORDER, order_id)
    case_id = await opened_case(p, "ord_h")
    poll = [
        StatusChange("ord_g", "delayed", 2),
        StatusChange("ord_h", "credited", 5),
        StatusChange("ord_g", "remediating", 3),
        StatusChange("ord_nobody", "credited", 1),
        StatusChange("ord_g", "paid", 1),  # older than what the order has by now
        StatusChange("ord_h", "credited", 5),  # the same change again
    ]

    applied = await PostgresStatusBook(p.infra.pool).apply(poll)

    assert applied == [True, True, True, None, False, False]
    query = "SELECT order_id, status, status_sequence FROM orders WHERE order_id = ANY($1::text[])"
    rows = await p.infra.pool.fetch(query, ["ord_g", "ord_h"])
    assert {r["order_id"]: (r["status"], r["status_sequence"]) for r in rows} == {
        "ord_g": ("remediating", 3),
        "ord_h": ("credited", 5),
    }
    case = (await p.client.get(f"/v1/support/cases/{case_id}")).json()
    assert (case["resolved_by"], case["resolution"]) == ("credited", "credited")
    assert [h["action"] for h in case["history"]].count("resolved") == 1


async def test_a_signed_second_charge_payments_refuses_opens_one_refused_charge_case_for_a_person(
    payments: Payments,
) -> None:
    p = payments
    await p.infra.pool.execute(ORDER, "ord_twice")  # paid by sim transaction tx-ord_twice

    async def second_charge() -> httpx.Response:
        body = orjson.dumps(
            {"order_id": "ord_twice", "provider_txn_id": "tx-again", "status": "succeeded", "amount": 600,
             "currency": "CNY", "paid_at": datetime.now(UTC).isoformat()}
        )  # fmt: skip
        return await p.client.post(
            "/v1/psp/sim/callbacks", content=body, headers={"X-Signature": sign("s", body, int(time.time()))}
        )

    answers = [await second_charge() for _ in range(2)]  # the provider repeats the notice it was refused
    assert [(a.status_code, a.json()["error"]) for a in answers] == [(409, "already_paid")] * 2
    listed = (await p.client.get("/v1/support/cases", params={"kind": "refused_charge"})).json()["cases"]
    assert [(c["order_id"], c["kind"], c["severity"]) for c in listed] == [("ord_twice", "refused_charge", "page")]
    reason = listed[0]["reason"]
    assert reason.startswith("sim charged 600 CNY (transaction tx-again), refused: order already paid by sim")
    case = (await p.client.get(f"/v1/support/cases/{listed[0]['id']}")).json()
    assert [(h["actor"], h["action"]) for h in case["history"]] == [("credited", "opened")]
    audit = "SELECT count(*) FROM callbacks WHERE order_id = 'ord_twice' AND outcome = 'rejected'"
    assert await p.count(audit) == 2
