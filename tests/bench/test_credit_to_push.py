"""Credit to push: from the ledger's credit to the credited notification reaching the webhook, for the step's
orders only, every wait before the reconciler's round included (status-to-push starts at that round)."""

from harness.bench.pipeline import credit_push_latencies, push_latencies
from harness.simulator.receiver import Received
from harness.simulator.run import Truth

CREDITED_AT = "2026-12-04T10:00:00+00:00"
CHANGED_AT = "2026-12-04T10:00:00.050000+00:00"  # the reconciler's round began 50 ms after the credit
ARRIVED = 1_796_378_400.080  # 10:00:00.080 UTC, 30 ms after that round


def notification(order_id: str, status: str) -> dict[str, object]:
    return {"order_id": order_id, "status": status, "credited_at": CREDITED_AT, "changed_at": CHANGED_AT}


def test_credit_to_push_counts_from_the_credit_and_only_the_credited_notifications_of_this_steps_orders() -> None:
    truth = Truth(orders={"ord_1": {}, "ord_2": {}})
    received = Received(
        payloads={
            "n1": notification("ord_1", "credited"),
            "n2": notification("ord_2", "delayed"),
            "n3": notification("ord_9", "credited"),  # an order of an earlier step
        },
        first_seen={"n1": ARRIVED, "n2": ARRIVED, "n3": ARRIVED},
    )

    [credit_to_push] = credit_push_latencies(truth, received)
    assert round(credit_to_push, 3) == 0.080
    assert sorted(round(s, 3) for s in push_latencies(truth, received)) == [0.030, 0.030]
