"""A status change that arrives after a newer one of its order (a lower sequence: a late redelivery, a replay) is
recorded for the timeline but never pushed: the user is never told "delayed" after "credited". Real broker and
PostgreSQL, the loopback push service."""

from contracts.events import OrderStatus
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import change, publish
from tests.notifier.push_service import PushService


async def test_a_status_older_than_one_already_handled_for_the_order_is_recorded_but_never_pushed(
    notifier: StartNotifier, push_service: PushService, isolation: str, broker: Broker
) -> None:
    running = await notifier()
    prefix = f"{isolation}."
    await running.api.put(f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe("phone"))
    await publish(broker, prefix, change("ord_1", OrderStatus.UNDER_REVIEW, 1))
    await eventually(lambda: len(push_service.messages("phone")) >= 1)
    await publish(broker, prefix, change("ord_1", OrderStatus.CREDITED, 3))
    await eventually(lambda: len(push_service.messages("phone")) >= 2)

    await publish(broker, prefix, change("ord_1", OrderStatus.DELAYED, 2))  # numbered before credited, arrives after
    await running.wait_until_consumed("ord_1", 3)
    await eventually(running.settled)

    assert [m["status"] for m in push_service.messages("phone")] == ["under_review", "credited"]
    assert [m["status"] for m in push_service.device_view("phone").values()] == ["credited"]
    body = (await running.api.get(f"{running.url}/v1/orders/ord_1/notifications")).json()
    recorded = {n["status"]: (n["delivery"], len(n["deliveries"])) for n in body["notifications"]}
    assert recorded == {"under_review": ("delivered", 1), "delayed": ("superseded", 0), "credited": ("delivered", 1)}
    timeline = (await running.api.get(f"{running.url}/v1/orders/ord_1/timeline")).json()
    assert (timeline["sequence"], timeline["final"]) == (3, True), "the page still ends at credited"
