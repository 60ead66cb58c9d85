"""The harness's webhook receiver answers the notifier even while the loop that started it is busy: a receiver
that waited for a load generator's loop answered late, the notifier retried its timeout, and the checks counted
a notification delivered twice that the stack had sent once."""

import time
import urllib.error
import urllib.request

import orjson

from credited.stack.processes import free_port
from harness.simulator.receiver import Received, WebhookReceiver
from servicekit.signatures import sign


def _post_blocking(url: str, body: bytes, signature: str) -> int:
    """A POST that holds the calling thread (and so its event loop) until answered."""
    request = urllib.request.Request(url, data=body, headers={"x-signature": signature}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


async def test_a_notification_is_answered_while_the_callers_loop_is_blocked_and_recorded_once_it_is_free() -> None:
    receiver = WebhookReceiver(free_port(), "receiver-secret")
    await receiver.start()
    try:
        body = orjson.dumps({"notification_id": "n-1", "order_id": "ord_1", "status": "credited"})
        arrived_before = time.time()
        status = _post_blocking(receiver.url, body, sign("receiver-secret", body, int(time.time())))
        assert status == 200
        assert receiver.received.payloads == {}, "recorded on the caller's loop, which has not run yet"
        await receiver.stop()
        assert receiver.received.deliveries == {"n-1": 1}
        assert receiver.received.first_seen["n-1"] >= arrived_before
        assert receiver.received.changed.is_set()
    finally:
        await receiver.stop()


async def test_a_notification_with_a_bad_signature_is_refused_and_counted() -> None:
    receiver = WebhookReceiver(free_port(), "receiver-secret")
    await receiver.start()
    try:
        body = orjson.dumps({"notification_id": "n-2", "order_id": "ord_2", "status": "credited"})
        try:
            _post_blocking(receiver.url, body, sign("another-secret", body, int(time.time())))
        except urllib.error.HTTPError as refused:
            assert refused.code == 401
        else:
            raise AssertionError("a bad signature was accepted")
    finally:
        await receiver.stop()
    assert receiver.received.rejected == 1
    assert receiver.received.payloads == {}


def test_a_runs_notifications_and_repeats_are_counted_from_its_own_orders_only() -> None:
    """The bench's rate steps share one receiver: a step counted every earlier step's notifications as its own."""
    received = Received()
    notes = (("n-1", "ord_1", "delayed", 1), ("n-2", "ord_1", "credited", 2), ("n-3", "ord_old", "credited", 3))
    for nid, order_id, status, times in notes:
        received.payloads[nid] = {"notification_id": nid, "order_id": order_id, "status": status}
        received.deliveries[nid] = times
    assert received.of_orders({"ord_1", "ord_2"}) == (2, 1)
    assert received.of_orders({"ord_old"}) == (1, 2)
    assert received.of_orders(set()) == (0, 0)
