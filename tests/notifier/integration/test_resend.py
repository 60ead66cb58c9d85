"""Support sends an order's latest notification to its user again (POST /v1/orders/{id}/notifications/resend) on the
real broker and PostgreSQL: a new delivery through the worker, recorded with the reason and the caller's key name."""

import asyncio

from contracts.events import OrderStatus
from notifier.adapters.delivery import SUPERSEDED_RESEND
from servicekit.identity import Scope
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import RunningNotifier, change, publish
from tests.notifier.push_service import Fault, PushService


async def test_a_resend_delivers_the_latest_notification_again_and_is_recorded_with_its_reason_and_caller(
    notifier: StartNotifier, push_service: PushService, isolation: str, broker: Broker
) -> None:
    running = await notifier()
    await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone"))
    await publish(
        broker, f"{isolation}.", change("ord_1", OrderStatus.DELAYED, 1), change("ord_1", OrderStatus.CREDITED, 2)
    )
    await eventually(lambda: len(push_service.messages("phone")) >= 2)
    await eventually(running.settled)
    latest = push_service.messages("phone")[-1]

    record, key = await running.notifier.infra.keys.create("support-alice", {Scope.SUPPORT_ACT})
    support = {"Authorization": f"Bearer {key}"}
    url = f"{running.url}/v1/orders/ord_1/notifications/resend"
    answer = await running.api.post(url, json={"reason": "user says the app showed nothing"}, headers=support)
    assert answer.status_code == 202, answer.text
    resend = answer.json()["resend"]
    assert (resend["order_id"], resend["status"], resend["by"], resend["deliveries"]) == (
        "ord_1",
        "credited",
        record.name,
        1,
    )
    assert resend["reason"] == "user says the app showed nothing"

    await eventually(lambda: len(push_service.messages("phone")) >= 3)
    await eventually(running.settled)
    assert push_service.messages("phone")[-1] == latest  # the credited notification, once more
    assert len(push_service.messages("phone")) == 3

    body = (await running.api.get(f"{running.url}/v1/orders/ord_1/notifications")).json()
    delayed, credited = body["notifications"]
    assert delayed["resends"] == [] and len(delayed["deliveries"]) == 1
    assert [(r["id"], r["reason"], r["by"]) for r in credited["resends"]] == [
        (resend["id"], resend["reason"], record.name)
    ]
    by_resend = {d["resend_id"]: d["state"] for d in credited["deliveries"]}
    assert by_resend == {None: "delivered", resend["id"]: "delivered"}
    assert credited["delivery"] == "delivered"


async def test_a_resend_of_a_week_old_notification_whose_first_attempt_fails_transiently_is_retried_not_given_up(
    notifier: StartNotifier, push_service: PushService, isolation: str, broker: Broker
) -> None:
    running = await notifier(max_attempts=None)  # retried for retry_for_s (3 days) from when it was queued
    pool = running.notifier.infra.pool
    await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone"))
    await publish(broker, f"{isolation}.", change("ord_old", OrderStatus.CREDITED, 1))
    await eventually(lambda: len(push_service.messages("phone")) >= 1)
    await eventually(running.settled)
    await pool.execute("UPDATE notifications SET created_at = now() - interval '7 days' WHERE order_id = 'ord_old'")

    push_service.script("phone", Fault(503))  # the push service is briefly down for the resend's first attempt
    url = f"{running.url}/v1/orders/ord_old/notifications/resend"
    answer = await running.api.post(url, json={"reason": "user lost the message"})
    assert answer.status_code == 202, answer.text
    await eventually(running.settled)  # the resend's delivery was queued with the answer

    row = await pool.fetchrow("SELECT state, attempts, last_error FROM deliveries WHERE resend_id IS NOT NULL")
    assert (row["state"], row["attempts"]) == ("delivered", 2), f"retried after its first attempt failed: {row}"
    assert [m["status"] for m in push_service.messages("phone")] == ["credited", "credited"]


async def test_a_resend_for_an_order_the_notifier_never_heard_of_is_404_and_a_bad_reason_422(
    notifier: StartNotifier,
) -> None:
    running = await notifier()
    unknown = await running.api.post(f"{running.url}/v1/orders/ord_nobody/notifications/resend", json={"reason": "x"})
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_order")
    for bad in ({"reason": ""}, {"reason": "x" * 201}, {}, {"reason": "a NUL \u0000 PostgreSQL cannot store"}):
        answer = await running.api.post(f"{running.url}/v1/orders/ord_nobody/notifications/resend", json=bad)
        assert answer.status_code == 422 and answer.json()["error"], answer.text
    _, reader = await running.notifier.infra.keys.create("support-reader", set(Scope) - {Scope.SUPPORT_ACT})
    url = f"{running.url}/v1/orders/ord_nobody/notifications/resend"
    lacking = await running.api.post(url, json={"reason": "x"}, headers={"Authorization": f"Bearer {reader}"})
    assert (lacking.status_code, lacking.json()["error"]) == (403, "insufficient_scope")
    assert await running.notifier.infra.pool.fetchval("SELECT count(*) FROM resends") == 0


async def told_once(
    notifier: StartNotifier, push_service: PushService, broker: Broker, isolation: str, status: OrderStatus
) -> RunningNotifier:
    """A notifier whose user u1 has a phone that was told `status` of ord_1 (sequence 1), settled."""
    running = await notifier()
    await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone"))
    await publish(broker, f"{isolation}.", change("ord_1", status, 1))
    await eventually(lambda: len(push_service.messages("phone")) == 1)
    await eventually(running.settled)
    return running


async def test_a_resend_waiting_for_its_retry_when_a_newer_status_goes_out_is_never_sent_so_the_device_ends_on_it(
    notifier: StartNotifier, push_service: PushService, isolation: str, broker: Broker
) -> None:
    running = await told_once(notifier, push_service, broker, isolation, OrderStatus.DELAYED)
    pool = running.notifier.infra.pool

    # Support resends the latest status ("delayed"); the push service is busy for that attempt, due again in 2 s.
    push_service.script("phone", Fault(503, retry_after="2"))
    url = f"{running.url}/v1/orders/ord_1/notifications/resend"
    assert (await running.api.post(url, json={"reason": "user saw nothing"})).status_code == 202
    await eventually(lambda: len(push_service.attempts["phone"]) == 2)  # the resend's first attempt: 503
    # Meanwhile the order is credited: that goes out at once.
    await publish(broker, f"{isolation}.", change("ord_1", OrderStatus.CREDITED, 2))
    await eventually(lambda: [m["status"] for m in push_service.messages("phone")][-1:] == ["credited"])
    await eventually(running.settled, timeout_s=30)  # the resend's retry came due and was settled

    assert [m["status"] for m in push_service.messages("phone")] == ["delayed", "credited"]
    (shown,) = push_service.device_view("phone").values()
    assert shown["status"] == "credited"
    row = await pool.fetchrow("SELECT state, attempts, last_error FROM deliveries WHERE resend_id IS NOT NULL")
    assert (row["state"], row["attempts"], row["last_error"]) == ("superseded", 2, SUPERSEDED_RESEND)
    states = dict(await pool.fetch("SELECT status, state FROM notifications WHERE order_id = 'ord_1'"))
    assert states == {"delayed": "delivered", "credited": "delivered"}


async def test_resend_requests_under_one_idempotency_key_at_once_resend_once_and_another_key_again(
    notifier: StartNotifier, push_service: PushService, isolation: str, broker: Broker
) -> None:
    running = await told_once(notifier, push_service, broker, isolation, OrderStatus.CREDITED)
    pool = running.notifier.infra.pool
    url = f"{running.url}/v1/orders/ord_1/notifications/resend"

    async def resend(key: str) -> dict[str, object]:
        answer = await running.api.post(url, json={"reason": "user saw nothing"}, headers={"Idempotency-Key": key})
        assert answer.status_code == 202, answer.text
        resent: dict[str, object] = answer.json()["resend"]
        return resent

    first, again = await asyncio.gather(resend("k1"), resend("k1"))  # a retry racing its request
    assert first["id"] == again["id"] and first["deliveries"] == again["deliveries"] == 1
    await eventually(running.settled)
    other = await resend("k2")
    await eventually(running.settled)
    assert other["id"] != first["id"]
    assert [m["status"] for m in push_service.messages("phone")] == ["credited"] * 3  # the first, then k1, k2
    assert await pool.fetchval("SELECT count(*) FROM resends WHERE order_id = 'ord_1'") == 2


async def test_an_idempotency_key_reused_with_another_reason_is_refused_409_and_resends_nothing_more(
    notifier: StartNotifier, push_service: PushService, isolation: str, broker: Broker
) -> None:
    running = await told_once(notifier, push_service, broker, isolation, OrderStatus.CREDITED)
    pool = running.notifier.infra.pool
    url = f"{running.url}/v1/orders/ord_1/notifications/resend"
    key = {"Idempotency-Key": "k1"}
    first = await running.api.post(url, json={"reason": "user saw nothing"}, headers=key)
    assert first.status_code == 202, first.text
    await eventually(running.settled)

    other = await running.api.post(url, json={"reason": "a different complaint"}, headers=key)
    assert (other.status_code, other.json().get("error")) == (409, "idempotency_key_reused"), other.text
    again = await running.api.post(url, json={"reason": "user saw nothing"}, headers=key)
    assert (again.status_code, again.json()["resend"]["id"]) == (202, first.json()["resend"]["id"])
    await eventually(running.settled)
    assert [m["status"] for m in push_service.messages("phone")] == ["credited"] * 2  # the first, then k1 once
    reasons = await pool.fetch("SELECT reason FROM resends WHERE order_id = 'ord_1'")
    assert [r["reason"] for r in reasons] == ["user saw nothing"]
