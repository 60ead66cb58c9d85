"""A support resend retried across a key rotation (`credited keys rotate`) on the real broker and PostgreSQL: the
notifier scopes Idempotency-Keys by the key's name, as payments does, so the retry with the new key resends nothing
more; both keys are accepted during the overlap and the old one gets the usual 401 once it ends."""

from datetime import timedelta

from contracts.events import OrderStatus
from servicekit.identity import Scope
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import change, publish
from tests.notifier.push_service import PushService


async def test_a_resend_retried_with_the_new_key_of_a_rotation_resends_once_and_the_old_key_is_refused_after_it(
    notifier: StartNotifier, push_service: PushService, isolation: str, broker: Broker
) -> None:
    running = await notifier()
    await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone"))
    await publish(broker, f"{isolation}.", change("ord_1", OrderStatus.CREDITED, 1))
    await eventually(lambda: len(push_service.messages("phone")) == 1)
    await eventually(running.settled)
    keys = running.notifier.infra.keys
    _, old = await keys.create("support-desk", {Scope.SUPPORT_ACT})
    url = f"{running.url}/v1/orders/ord_1/notifications/resend"

    async def resend(key: str) -> tuple[int, dict[str, object]]:
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "ticket-42"}
        answer = await running.api.post(url, json={"reason": "user saw nothing"}, headers=headers)
        body: dict[str, object] = answer.json()
        return answer.status_code, body

    status, first = await resend(old)
    assert status == 202, first
    rotated = await keys.rotate("support-desk", timedelta(seconds=2))
    assert rotated is not None
    new = rotated[2]
    for key in (new, old):  # the retry with the new key, and the old key still accepted
        status, again = await resend(key)
        assert (status, again["resend"]) == (202, first["resend"])
    await eventually(running.settled)
    assert [m["status"] for m in push_service.messages("phone")] == ["credited"] * 2  # the first, then one resend
    assert await running.notifier.infra.pool.fetchval("SELECT count(*) FROM resends") == 1

    async def old_refused() -> bool:
        return (await resend(old))[0] == 401

    await eventually(old_refused, timeout_s=30)
    status, refused = await resend(old)
    assert (status, refused["error"], refused["detail"]) == (401, "unauthenticated", "this API key has expired")
    assert (await resend(new))[0] == 202
