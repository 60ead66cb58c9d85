"""Payments' support API on the real broker and PostgreSQL, with the real ledger served over HTTP beside it (its
credit step dropped for every order by the development fault knob, so only a re-drive credits): orders found by
each key, an act recorded with its command on the topic once, the ledger crediting what a person re-drove, one
timeline in time order across payments, the ledger and the act, the reconciler and notifier (not running) named
as unavailable, the refusals, and the keys each route needs."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from contracts.codec import decode, envelope_for
from contracts.commands import BlockCredit, GrantCompensation, IssueRefund, RedriveCredit
from contracts.events import CreditRejected, RefundSucceeded
from contracts.topics import Topic
from credited.stack.processes import free_port
from harness.simulator.run import partition_count
from ledger.bootstrap import build as build_ledger
from ledger.config import Settings as LedgerSettings
from payments.adapters.postgres import PostgresPayments
from payments.adapters.support_http import FILTERS
from payments.bootstrap import build as build_payments
from payments.config import Settings as PaymentsSettings
from payments.domain import RefundAnswer
from payments.refunds import MAX_ATTEMPTS, RefundFollowUp, handle_issue_refund
from servicekit.http import EmbeddedServer, serve
from servicekit.identity import Scope
from servicekit.infrastructure import Infrastructure
from servicekit.pages import Cursor
from tests.conftest import Broker
from tests.kafka_reader import eventually, read_until
from tests.payments.sim_callbacks import paid_notice, signed
from tests.payments.unit.test_refunds import Pauses, Providers, ScriptedProvider
from tests.service_settings import settings_for

SECRET = "support-test-secret"


@dataclass
class Stack:
    payments: httpx.AsyncClient
    ledger: httpx.AsyncClient
    infra: Infrastructure
    settings: PaymentsSettings
    broker: Broker
    agent: str

    async def key(self, name: str, *scopes: Scope) -> dict[str, str]:
        _, key = await self.infra.keys.create(name, set(scopes))
        return {"Authorization": f"Bearer {key}"}

    async def order(self, user: str) -> str:
        placed = await self.payments.post(
            "/v1/orders", json={"user_id": user, "amount": 600, "currency": "CNY", "channel": "alipay"}
        )
        assert placed.status_code == 201, placed.text
        return str(placed.json()["order_id"])

    async def paid_order(self, user: str) -> str:
        order_id = await self.order(user)
        body = paid_notice(order_id)
        paid = await self.payments.post("/v1/psp/sim/callbacks", content=body, headers=signed(SECRET, body))
        assert paid.json()["result"] == "applied", paid.text
        return order_id

    async def dropped_by_the_ledger(self, user: str) -> str:
        """A paid order whose payment the ledger recorded and whose credit it dropped (the fault knob): what a
        person re-drives. (A re-drive that reached the ledger before the payment would be absorbed by it.)"""
        order_id = await self.paid_order(user)

        async def dropped() -> bool:
            return order_id in (await self.ledger.get("/v1/faults")).json()["credit_dropped"]

        await eventually(dropped)
        return order_id

    async def act(self, order_id: str, action: str, key: str | None = None, **extra: object) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        body = {"action": action, "reason": "user wrote in", **extra}
        return await self.payments.post(f"/v1/support/orders/{order_id}/actions", json=body, headers=headers)

    async def sql(self, query: str, *args: object) -> object:
        conn = await asyncpg.connect(
            self.settings.database_url, server_settings={"search_path": self.settings.db_schema}
        )
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    async def published(self, topic: Topic) -> list[ConsumerRecord[bytes, bytes]]:
        """Once the outbox is drained: every record on `topic`, up to its end."""
        await eventually(lambda: self.sql("SELECT count(*) = 0 FROM outbox"))
        name = topic.qualified(self.settings.topic_prefix)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap, group_id=None)
        await consumer.start()
        try:
            parts = [TopicPartition(name, p) for p in range(await partition_count(self.broker.bootstrap, name))]
            total = sum((await consumer.end_offsets(parts)).values())
        finally:
            await consumer.stop()
        return await read_until(self.broker.bootstrap, name, lambda r: len(r) >= total)


class StandInNotifier:
    """The notifier's resend endpoint as its contract says (POST /v1/orders/{id}/notifications/resend, support:act
    there; 202 with the resend, 404 when it has told the order's user nothing): it records who asked. Its order
    notifications answer 503, as a notifier that is not ready does."""

    def __init__(self) -> None:
        self.told: set[str] = set()
        self.asked: list[tuple[str, str, dict[str, object]]] = []
        self.keys: list[str | None] = []
        """The Idempotency-Key of each resend asked for."""
        routes = [
            Route("/v1/orders/{order_id}/notifications/resend", self._resend, methods=["POST"]),
            Route("/v1/orders/{order_id}/notifications", self._notifications, methods=["GET"]),
        ]
        self.port = free_port()
        self.server = EmbeddedServer(
            uvicorn.Config(Starlette(routes=routes), host="127.0.0.1", port=self.port, log_level="warning", loop="none")
        )

    async def _resend(self, request: Request) -> JSONResponse:
        order_id = request.path_params["order_id"]
        self.asked.append((order_id, request.headers["Authorization"], await request.json()))
        self.keys.append(request.headers.get("Idempotency-Key"))
        if order_id not in self.told:
            return JSONResponse({"error": "unknown_order", "detail": "no notification"}, status_code=404)
        return JSONResponse({"resend": {"id": "r1", "order_id": order_id, "deliveries": 1}}, status_code=202)

    async def _notifications(self, _: Request) -> JSONResponse:
        return JSONResponse({"error": "not_ready", "detail": "starting"}, status_code=503)


@pytest.fixture
async def notifier() -> AsyncIterator[StandInNotifier]:
    stand_in = StandInNotifier()
    task = asyncio.create_task(stand_in.server.serve())
    while not stand_in.server.started:  # uvicorn exposes a flag, not an event
        await asyncio.sleep(0.02)
    yield stand_in
    stand_in.server.should_exit = True
    await task


@pytest.fixture
async def stack(broker: Broker, database_url: str, isolation: str, notifier: StandInNotifier) -> AsyncIterator[Stack]:
    ledger_settings = settings_for(
        LedgerSettings, broker, database_url, isolation, fault_drop_credit_share=1.0, environment="development"
    )
    ledger_infra, ledger_app = await build_ledger(ledger_settings)
    ledger_port, nobody = free_port(), free_port()  # nothing listens on `nobody`: the reconciler
    tasks = [
        asyncio.create_task(serve(ledger_app, "127.0.0.1", ledger_port)),
        asyncio.create_task(ledger_infra.relay.run()),
    ]
    for consumer in ledger_infra.consumers:
        await consumer.start()
    tasks += [asyncio.create_task(c.run()) for c in ledger_infra.consumers]
    settings = settings_for(
        PaymentsSettings,
        broker,
        database_url,
        isolation,
        psp_secrets={"sim": [SECRET]},
        environment="development",
        audit_ledger_url=f"http://127.0.0.1:{ledger_port}",
        reconciler_url=f"http://127.0.0.1:{nobody}",
        notifier_url=f"http://127.0.0.1:{notifier.port}",
        support_timeout_s=1.0,
    )
    infra, app = await build_payments(settings)
    tasks.append(asyncio.create_task(infra.relay.run()))
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    _, key = await infra.keys.create(agent, {Scope.SUPPORT_READ, Scope.SUPPORT_ACT, Scope.ORDERS_WRITE})
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payments", headers=headers) as api,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ledger_port}", headers=headers) as ledger,
    ):
        await eventually(lambda: _answers(ledger), timeout_s=30)
        yield Stack(api, ledger, infra, settings, broker, agent)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for each in (infra, ledger_infra):
        with contextlib.suppress(Exception):
            await each.close()


async def _answers(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def test_orders_are_found_by_order_id_user_id_or_provider_transaction_id(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:6]}"
    first, second = await stack.paid_order(user), await stack.paid_order(user)
    unpaid = await stack.order(user)
    by_user = await stack.payments.get("/v1/support/orders", params={"user_id": user})
    assert by_user.status_code == 200, by_user.text
    assert [o["order_id"] for o in by_user.json()["orders"]] == [unpaid, second, first]  # newest first
    by_txn = (await stack.payments.get("/v1/support/orders", params={"provider_txn_id": f"tx-{second}"})).json()
    assert [(o["order_id"], o["payment_status"], o["open_cases"]) for o in by_txn["orders"]] == [
        (second, "succeeded", 0)
    ]
    by_id = (await stack.payments.get("/v1/support/orders", params={"order_id": unpaid})).json()["orders"]
    assert [(o["order_id"], o["provider_txn_id"], o["paid_at"]) for o in by_id] == [(unpaid, None, None)]
    for params in ({}, {"user_id": user, "order_id": first}):
        refused = await stack.payments.get("/v1/support/orders", params=params)
        assert refused.status_code == 400 and refused.json()["error"] == "one_filter", refused.text
    none = await stack.payments.get("/v1/support/orders", params={"provider_txn_id": "tx-nobody"})
    assert none.json() == {"orders": []}


async def test_a_search_value_or_page_cursor_with_a_nul_is_refused_naming_it_not_answered_500(
    stack: Stack,
) -> None:
    for key in FILTERS:
        refused = await stack.payments.get("/v1/support/orders", params={key: "u\x00"})
        assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == f"query.{key}", refused.text
    since, until = (datetime.now(UTC) - timedelta(hours=1)).isoformat(), datetime.now(UTC).isoformat()
    cursor = Cursor(datetime.now(UTC), "ord\x00").encode()
    auditor = await stack.key("auditor", Scope.AUDIT_READ)
    params = {"since": since, "until": until, "after": cursor}
    page = await stack.payments.get("/v1/audit/payments", params=params, headers=auditor)
    assert page.status_code == 400 and page.json()["error"] == "bad_cursor", page.text


async def test_a_redrive_is_recorded_sent_once_per_idempotency_key_and_credited_by_the_ledger(stack: Stack) -> None:
    order_id = await stack.dropped_by_the_ledger(f"u-{uuid.uuid4().hex[:6]}")
    first, again = [await stack.act(order_id, "redrive_credit", key=f"redrive-{order_id}") for _ in range(2)]
    assert (first.status_code, again.status_code) == (202, 202), first.text
    assert again.json() == first.json()
    action = first.json()["action"]
    assert (action["action"], action["by"], action["outcome"], action["reason"]) == (
        "redrive_credit", stack.agent, "requested", "user wrote in",
    )  # fmt: skip
    assert await stack.sql("SELECT count(*) FROM support_actions WHERE order_id = $1", order_id) == 1
    assert not [r for r in await stack.published(Topic.LEDGER_COMMANDS) if r.key == order_id.encode()]
    records = [r for r in await stack.published(Topic.LEDGER_REDRIVES) if r.key == order_id.encode()]
    assert len(records) == 1
    message, envelope = decode(records[0].value, records[0].headers)
    assert isinstance(message, RedriveCredit) and envelope.producer == "payments"
    assert (message.requested_by, message.provider_txn_id, envelope.event_id) == (
        stack.agent, f"tx-{order_id}", action["command_event_id"],
    )  # fmt: skip

    async def credited() -> bool:
        entries = (await stack.ledger.get(f"/v1/orders/{order_id}/entries")).json()["transactions"]
        return [t["kind"] for t in entries] == ["credit"]

    await eventually(credited)  # the ledger takes payments' RedriveCredit on the payment it recorded


async def test_the_timeline_merges_payments_the_ledger_and_the_acts_in_time_order_and_names_who_did_not_answer(
    stack: Stack,
) -> None:
    order_id = await stack.dropped_by_the_ledger(f"u-{uuid.uuid4().hex[:6]}")
    assert (await stack.act(order_id, "redrive_credit")).status_code == 202

    async def view() -> dict[str, object] | None:
        answer = await stack.payments.get(f"/v1/support/orders/{order_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, object] = answer.json()
        timeline = body["timeline"]
        assert isinstance(timeline, list)
        return body if any(e["source"] == "ledger" for e in timeline) else None

    await eventually(view)
    body = await view()
    assert body is not None
    timeline = body["timeline"]
    assert isinstance(timeline, list)
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    kinds = [(e["source"], e["kind"]) for e in timeline]
    for earlier, later in (
        (("payments", "order_placed"), ("payments", "payment_succeeded")),
        (("payments", "payment_succeeded"), ("support", "redrive_credit")),
        (("support", "redrive_credit"), ("ledger", "credit")),
    ):
        assert kinds.index(earlier) < kinds.index(later), kinds
    assert sorted(u["source"] for u in body["unavailable"]) == ["notifier", "reconciler"]  # type: ignore[attr-defined]
    assert [a["action"] for a in body["actions"]] == ["redrive_credit"]  # type: ignore[attr-defined]
    assert body["order"]["order_id"] == order_id and body["cases"] == []  # type: ignore[index]
    # The ledger's credit in the order's money as staff read it: "credit of 600" for 600 fen read as 600 yuan.
    order: dict[str, Any] = body["order"]  # type: ignore[assignment]
    assert order["currency"] == "CNY"
    credit = next(e["summary"] for e in timeline if e["source"] == "ledger")
    assert credit == f"credit of {order['amount'] // 100}.{order['amount'] % 100:02d} CNY", credit


async def test_acts_that_cannot_apply_are_refused_with_409_naming_why(stack: Stack) -> None:
    unpaid = await stack.order(f"u-{uuid.uuid4().hex[:6]}")
    for action in ("redrive_credit", "refund"):
        answer = await stack.act(unpaid, action)
        assert (answer.status_code, answer.json()["error"]) == (409, "not_paid"), answer.text
    credited = await stack.paid_order(f"u-{uuid.uuid4().hex[:6]}")
    await stack.sql("UPDATE orders SET status = 'credited' WHERE order_id = $1", credited)  # as orders.status says
    answer = await stack.act(credited, "redrive_credit")
    assert (answer.status_code, answer.json()["error"]) == (409, "already_credited")
    paid = await stack.paid_order(f"u-{uuid.uuid4().hex[:6]}")
    compensation = await stack.act(paid, "grant_compensation", amount=100)
    assert (compensation.status_code, compensation.json()["error"]) == (409, "not_credited")
    assert (await stack.act(paid, "refund")).status_code == 202
    for action in ("refund", "redrive_credit"):
        answer = await stack.act(paid, action)
        assert (answer.status_code, answer.json()["error"]) == (409, "refund_in_flight"), action
    await stack.sql(
        "INSERT INTO refunds (order_id, refund_id, status, reason, attempts) VALUES ($1, 'r1', 'succeeded', 'ok', 1)",
        paid,
    )  # what payments records once the provider refunded
    answer = await stack.act(paid, "refund")
    assert (answer.status_code, answer.json()["error"]) == (409, "already_refunded")
    assert await stack.sql("SELECT count(*) FROM support_actions WHERE order_id = ANY($1)", [unpaid, credited]) == 0
    unknown = await stack.act("ord_nobody", "redrive_credit")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_order")


async def test_the_same_idempotency_key_for_another_act_is_refused(stack: Stack) -> None:
    paid = await stack.paid_order(f"u-{uuid.uuid4().hex[:6]}")
    key = f"k-{paid}"
    assert (await stack.act(paid, "redrive_credit", key=key)).status_code == 202
    other = await stack.act(paid, "refund", key=key)
    assert (other.status_code, other.json()["error"]) == (409, "idempotency_key_reused")


async def test_the_same_idempotency_key_from_another_persons_key_is_refused_not_answered_with_the_first_act(
    stack: Stack,
) -> None:
    paid = await stack.paid_order(f"u-{uuid.uuid4().hex[:6]}")
    key = f"k-{paid}"
    assert (await stack.act(paid, "redrive_credit", key=key)).status_code == 202
    second = await stack.key("second-agent", Scope.SUPPORT_ACT, Scope.SUPPORT_READ)
    body = {"action": "redrive_credit", "reason": "user wrote in"}
    answer = await stack.payments.post(
        f"/v1/support/orders/{paid}/actions", json=body, headers={**second, "Idempotency-Key": key}
    )
    assert (answer.status_code, answer.json()["error"]) == (409, "idempotency_key_reused"), answer.text
    assert await stack.sql("SELECT count(*) FROM support_actions WHERE order_id = $1", paid) == 1


async def test_the_same_idempotency_key_with_another_reason_or_amount_is_refused_and_acts_nothing(
    stack: Stack,
) -> None:
    paid = await stack.paid_order(f"u-{uuid.uuid4().hex[:6]}")
    await stack.sql("UPDATE orders SET status = 'credited' WHERE order_id = $1", paid)  # what earns a compensation
    key = f"k-{paid}"
    first = await stack.act(paid, "grant_compensation", key=key, amount=100)
    assert first.status_code == 202, first.text
    again = await stack.act(paid, "grant_compensation", key=key, amount=100)
    assert (again.status_code, again.json()) == (202, first.json())
    for other in ({"amount": 200}, {"amount": 100, "reason": "another reason"}):
        answer = await stack.act(paid, "grant_compensation", key=key, **other)
        assert (answer.status_code, answer.json()["error"]) == (409, "idempotency_key_reused"), other
        assert key in answer.json()["detail"]
    assert await stack.sql("SELECT count(*) FROM support_actions WHERE order_id = $1", paid) == 1
    commands = [r for r in await stack.published(Topic.LEDGER_COMMANDS) if r.key == paid.encode()]
    assert len(commands) == 1  # one GrantCompensation, for the first act's amount
    message, _ = decode(commands[0].value, commands[0].headers)
    assert isinstance(message, GrantCompensation) and message.amount == 100


async def test_a_second_compensation_under_another_key_is_refused_as_the_ledger_pays_one_per_order(
    stack: Stack,
) -> None:
    """Two people compensating one late order were both answered 202; the ledger paid the first and dropped the
    second, so the second person told the user about money that never came."""
    paid = await stack.paid_order(f"u-{uuid.uuid4().hex[:6]}")
    await stack.sql("UPDATE orders SET status = 'credited' WHERE order_id = $1", paid)
    assert (await stack.act(paid, "grant_compensation", key=f"a-{paid}", amount=100)).status_code == 202
    second = await stack.act(paid, "grant_compensation", key=f"b-{paid}", amount=200)
    assert (second.status_code, second.json()["error"]) == (409, "compensation_asked"), second.text
    assert paid in second.json()["detail"]
    assert await stack.sql("SELECT count(*) FROM support_actions WHERE order_id = $1", paid) == 1
    commands = [r for r in await stack.published(Topic.LEDGER_COMMANDS) if r.key == paid.encode()]
    assert len(commands) == 1


async def test_reading_needs_support_read_and_acting_needs_support_act(stack: Stack) -> None:
    paid = await stack.paid_order(f"u-{uuid.uuid4().hex[:6]}")
    reader = await stack.key(f"reader-{paid}", Scope.SUPPORT_READ)
    backend = await stack.key(f"backend-{paid}", Scope.ORDERS_READ, Scope.ORDERS_WRITE)
    url, act = f"/v1/support/orders/{paid}", {"action": "redrive_credit", "reason": "why"}
    client = stack.payments
    for method, path, headers, body, status in (
        ("GET", url, {"Authorization": ""}, None, 401),
        ("GET", url, backend, None, 403),
        ("GET", "/v1/support/orders", backend, None, 403),
        ("POST", f"{url}/actions", reader, act, 403),
        ("POST", f"{url}/actions", {"Authorization": ""}, act, 401),
        ("GET", url, reader, None, 200),
    ):
        answer = await client.request(method, path, headers=headers, json=body)
        assert answer.status_code == status, (method, path, answer.text)
    assert await stack.sql("SELECT count(*) FROM support_actions WHERE order_id = $1", paid) == 0


async def test_a_support_key_is_told_its_own_name_and_scopes_so_a_client_can_tell_whether_it_may_act(
    stack: Stack,
) -> None:
    reader = await stack.key(f"reader-{uuid.uuid4().hex[:6]}", Scope.SUPPORT_READ)
    backend = await stack.key(f"backend-{uuid.uuid4().hex[:6]}", Scope.ORDERS_READ)
    own = await stack.payments.get("/v1/support/me")
    assert own.status_code == 200, own.text
    assert own.json() == {"name": stack.agent, "scopes": ["orders:write", "support:act", "support:read"]}
    answer = await stack.payments.get("/v1/support/me", headers=reader)
    assert answer.status_code == 200 and answer.json()["scopes"] == ["support:read"]
    assert (await stack.payments.get("/v1/support/me", headers=backend)).status_code == 403
    assert (await stack.payments.get("/v1/support/me", headers={"Authorization": ""})).status_code == 401


async def test_a_resend_asks_the_notifier_once_per_idempotency_key_with_the_callers_key_and_is_recorded(
    stack: Stack, notifier: StandInNotifier
) -> None:
    paid, untold = await stack.paid_order(f"u-{uuid.uuid4().hex[:6]}"), await stack.order(f"u-{uuid.uuid4().hex[:6]}")
    notifier.told.add(paid)
    first, again = [await stack.act(paid, "resend_notification", key=f"resend-{paid}") for _ in range(2)]
    assert (first.status_code, again.status_code) == (202, 202), first.text
    assert again.json() == first.json()
    action = first.json()["action"]
    assert (action["action"], action["outcome"], action["command_event_id"]) == ("resend_notification", "resent", None)
    assert notifier.asked == [(paid, stack.payments.headers["Authorization"], {"reason": "user wrote in"})]
    assert notifier.keys == [f"resend-{paid}"]  # so the notifier resends once for two requests of it at once
    nothing = await stack.act(untold, "resend_notification")
    assert (nothing.status_code, nothing.json()["error"]) == (409, "no_notification"), nothing.text
    assert await stack.sql("SELECT count(*) FROM support_actions WHERE action = 'resend_notification'") == 1


async def test_a_resend_the_notifier_cannot_be_asked_is_refused_503_and_not_recorded(
    stack: Stack, notifier: StandInNotifier
) -> None:
    paid = await stack.paid_order(f"u-{uuid.uuid4().hex[:6]}")
    notifier.server.should_exit = True
    await eventually(lambda: not notifier.server.started or notifier.server.should_exit)
    while True:  # until the stand-in stopped listening
        try:
            async with httpx.AsyncClient() as probe:
                await probe.get(f"http://127.0.0.1:{notifier.port}/", timeout=0.5)
        except httpx.TransportError:
            break
        await asyncio.sleep(0.05)
    resend = await stack.act(paid, "resend_notification", key=f"k-{paid}")
    assert (resend.status_code, resend.json()["error"]) == (503, "notifier_unavailable"), resend.text
    assert await stack.sql("SELECT count(*) FROM support_actions WHERE order_id = $1", paid) == 0


async def test_an_orders_cases_come_with_it_on_its_timeline_and_open_ones_are_counted_in_search(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:6]}"
    order_id = await stack.paid_order(user)
    for kind, resolved in (("review_overdue", "now()"), ("needs_support", "NULL")):  # as payments' cases consumer
        await stack.sql(
            "INSERT INTO support_cases (order_id, user_id, kind, severity, reason, request_event_id, opened_at,"
            f" resolved_at, resolved_by, resolution) VALUES ($1, $2, $3, 'page', 'refund failed', $4,"
            f" now() - interval '1 minute', {resolved}, 'credited', 'credited')",
            order_id, user, kind, f"{kind}-{order_id}",
        )  # fmt: skip
    found = (await stack.payments.get("/v1/support/orders", params={"user_id": user})).json()["orders"]
    assert [o["open_cases"] for o in found] == [1]
    body = (await stack.payments.get(f"/v1/support/orders/{order_id}")).json()
    cases = {c["kind"]: c for c in body["cases"]}
    assert set(cases) == {"review_overdue", "needs_support"}
    assert cases["needs_support"]["resolved_at"] is None and cases["needs_support"]["age_s"] >= 60
    assert cases["review_overdue"]["resolution"] == "credited" and cases["review_overdue"]["age_s"] == 60  # to resolved
    kinds = [e["kind"] for e in body["timeline"] if e["source"] == "support"]
    assert sorted(kinds) == ["case_opened", "case_opened", "case_resolved"]


async def test_a_compensation_is_granted_by_the_ledger_and_a_refund_blocks_the_credit_at_the_ledger_first_once(
    stack: Stack,
) -> None:
    order_id = await stack.dropped_by_the_ledger(f"u-{uuid.uuid4().hex[:6]}")
    assert (await stack.act(order_id, "redrive_credit")).status_code == 202

    async def kinds() -> list[str]:
        return [t["kind"] for t in (await stack.ledger.get(f"/v1/orders/{order_id}/entries")).json()["transactions"]]

    await eventually(lambda: _has(kinds, "credit"))
    await stack.sql("UPDATE orders SET status = 'credited' WHERE order_id = $1", order_id)  # as orders.status says
    too_much = await stack.act(order_id, "grant_compensation", amount=601)
    assert (too_much.status_code, too_much.json()["error"]) == (409, "compensation_above_amount")
    granted = await stack.act(order_id, "grant_compensation", amount=60)
    assert granted.status_code == 202, granted.text
    await eventually(lambda: _has(kinds, "compensation"))

    refunded = await stack.dropped_by_the_ledger(f"u-{uuid.uuid4().hex[:6]}")
    answers = [await stack.act(refunded, "refund", key=f"refund-{refunded}") for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 202] and answers[0].json() == answers[1].json()
    assert answers[0].json()["action"]["outcome"] == "awaiting_ledger_block"
    records = [r for r in await stack.published(Topic.LEDGER_COMMANDS) if r.key == refunded.encode()]
    assert len(records) == 1
    message, envelope = decode(records[0].value, records[0].headers)
    assert isinstance(message, BlockCredit) and envelope.producer == "payments"
    assert stack.agent in message.reason and envelope.event_id == answers[0].json()["action"]["command_event_id"]
    assert not [r for r in await stack.published(Topic.PAYMENTS_COMMANDS) if r.key == refunded.encode()]
    ledger_events = Topic.LEDGER_EVENTS.qualified(stack.settings.topic_prefix)

    def blocked(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
        answers = [decode(r.value, r.headers)[0] for r in records if r.key == refunded.encode()]
        return any(isinstance(m, CreditRejected) and m.final and stack.agent in m.reason for m in answers)

    await read_until(stack.broker.bootstrap, ledger_events, blocked)  # the reconciler refunds on this answer


async def _has(kinds: Callable[[], Awaitable[list[str]]], kind: str) -> bool:
    return kind in await kinds()


async def test_an_order_whose_refund_is_pending_at_the_provider_is_neither_re_driven_nor_refunded_until_it_ends(
    stack: Stack,
) -> None:
    # The provider accepted the reconciler's refund and has not finished it: a credit re-driven beside it would pay
    # the user twice once the provider ends it refunded.
    order_id = await stack.paid_order(f"u-{uuid.uuid4().hex[:6]}")
    uow = stack.infra.outbox_writers(PostgresPayments)
    pending = RefundAnswer("pending", refund_id="50300", reason="PROCESSING")
    provider = ScriptedProvider([pending], [pending] * MAX_ATTEMPTS, name="sim")
    user_id = str(await stack.sql("SELECT user_id FROM orders WHERE order_id = $1", order_id))
    command = IssueRefund(
        order_id=order_id, user_id=user_id, amount=600, currency="CNY", reason="late", requested_at=datetime.now(UTC)
    )
    envelope = envelope_for(command, producer="reconciler", event_id=f"refund-{order_id}")
    await handle_issue_refund(
        command, envelope, uow=uow, providers=Providers(provider), provider_timeout_s=1.0, sleep=Pauses()
    )
    assert await stack.sql("SELECT status FROM refunds WHERE order_id = $1", order_id) == "pending"
    for action in ("redrive_credit", "refund"):
        answer = await stack.act(order_id, action)
        assert (answer.status_code, answer.json()["error"]) == (409, "refund_in_flight"), answer.text

    due_at = await stack.sql("SELECT due_at FROM refunds WHERE order_id = $1", order_id)
    assert isinstance(due_at, datetime)
    provider.queries = [pending]  # still pending when asked again, past the time a person is asked to look
    impatient = RefundFollowUp(uow, Providers(provider), ask_timeout_s=1.0, stuck_after_s=0, clock=lambda: due_at)
    assert await impatient.round() == 1
    case = "SELECT kind || ': ' || reason FROM support_cases WHERE order_id = $1 AND resolved_at IS NULL"
    assert await stack.sql(case, order_id) == "needs_support: refund of 6.00 CNY pending at sim for 0 h: check it there"

    provider.queries = [RefundAnswer("succeeded", refund_id="50300")]
    due_at = await stack.sql("SELECT due_at FROM refunds WHERE order_id = $1", order_id)
    assert isinstance(due_at, datetime)
    follow_up = RefundFollowUp(uow, Providers(provider), ask_timeout_s=1.0, clock=lambda: due_at)
    assert await follow_up.round() == 1
    assert await stack.sql("SELECT status FROM refunds WHERE order_id = $1", order_id) == "succeeded"
    refunded = [decode(r.value, r.headers)[0] for r in await stack.published(Topic.PAYMENTS_EVENTS)]
    assert [m.order_id for m in refunded if isinstance(m, RefundSucceeded)] == [order_id]
    answer = await stack.act(order_id, "redrive_credit")
    assert (answer.status_code, answer.json()["error"]) == (409, "already_refunded"), answer.text
