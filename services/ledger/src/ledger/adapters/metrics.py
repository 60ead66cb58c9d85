"""The ledger's own metrics, on the service's registry: what became of the retries parked to wait for a payment."""

from prometheus_client import CollectorRegistry, Counter

PARKING_OUTCOMES = ("parked", "absorbed", "contradicted", "expired", "block_waits")
"""parked: a retry came before its order's payment; absorbed: the payment came and answered it; contradicted: the
payment came and the parked retry's claim differs from it (never credited); expired: no payment within the park
time, dead-lettered; block_waits: a BlockCredit came for an order with a parked retry and no payment, and waits
with it (the payment clears it and credits; expiry applies it)."""


class ParkingMetrics:
    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self._service = service
        self.retries = Counter(
            "credited_ledger_parked_retries_total",
            "RetryCredits for an order with no recorded payment yet, by what became of them.",
            ["service", "outcome"],
            registry=registry,
        )
        for outcome in PARKING_OUTCOMES:
            self.retries.labels(service, outcome)

    def count(self, outcome: str, n: int = 1) -> None:
        self.retries.labels(self._service, outcome).inc(n)
