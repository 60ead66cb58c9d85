"""With the broker away, the notifier keeps delivering what it has queued, settles each success at once (so no
lease runs out on a delivered notification and sends it again), and holds a failure until the broker takes its
dead letter. Real PostgreSQL, a broker of the session's kind that the test stops, the loopback push service."""

import asyncio

import pytest

from contracts.events import OrderStatus
from contracts.topics import Topic
from servicekit.kafka import ensure_topics
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.harness import change, dead_letters, header, notifier_settings, publish, start_notifier
from tests.notifier.push_service import Fault, PushService
from tests.stoppable_broker import StoppableBroker

# The receivers ask for their retries (Retry-After): the failing one first, the good one later, both after the
# broker has stopped. The good one's success then comes while the failure waits for its dead letter.
BAD_RETRY_S, GOOD_RETRY_S = 8, 14


@pytest.mark.long
async def test_deliveries_while_the_broker_is_away_are_settled_at_once_and_a_failure_waits_for_its_dead_letter(
    own_broker: StoppableBroker, push_service: PushService, database_url: str, isolation: str
) -> None:
    await asyncio.to_thread(own_broker.start)
    prefix = f"{isolation}."
    await ensure_topics(own_broker.bootstrap, [t.qualified(prefix) for t in Topic], 1)
    broker = Broker("apache" if own_broker.kind == "apache" else "embedded", own_broker.bootstrap)
    settings = notifier_settings(broker, database_url, isolation, max_attempts=5)
    running = await start_notifier(settings)
    try:
        for device in ("good", "bad"):
            answer = await running.api.put(
                f"{running.url}/v1/users/u1/subscriptions", json=push_service.subscribe(device)
            )
            assert answer.status_code == 200, answer.text
        push_service.script("good", Fault(429, retry_after=str(GOOD_RETRY_S)))  # then accepted
        push_service.script("bad", Fault(429, retry_after=str(BAD_RETRY_S)))  # then gone (below): dead-lettered
        await publish(broker, prefix, change("ord_1", OrderStatus.CREDITED, 2))
        await eventually(lambda: all(len(push_service.attempts.get(d, [])) >= 1 for d in ("good", "bad")))

        await asyncio.to_thread(own_broker.stop)  # before the retries come
        assert all(len(push_service.attempts[d]) == 1 for d in ("good", "bad")), "retried before the broker stopped"
        push_service.gone.add("bad")  # every later attempt answers 410
        await eventually(lambda: len(push_service.attempts.get("bad", [])) >= 2, timeout_s=60)
        await eventually(lambda: len(push_service.messages("good")) >= 1, timeout_s=60)
        # Past the lease of every delivery attempted: the failure is tried again (410 again) and still waits.
        await asyncio.sleep(settings.lease_s + 4)
        states = dict(
            await running.notifier.infra.pool.fetch("SELECT target, state FROM deliveries WHERE order_id = 'ord_1'")
        )
        assert len(push_service.messages("good")) == 1, "a delivered notification went out again"
        assert sorted(states.values()) == ["delivered", "pending"], states  # the failure waits for the broker

        await asyncio.to_thread(own_broker.start)
        await eventually(running.settled, timeout_s=120)
        records = await dead_letters(broker, prefix)
        assert records and all("push service answered 410" in header(r, "dlq_reason") for r in records)
        assert len(push_service.messages("good")) == 1
    finally:
        await running.stop()
