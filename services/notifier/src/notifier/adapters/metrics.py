"""PrometheusNotifierMetrics: deliveries by channel and outcome, and how long a status change takes to
reach the device, on the service's registry. Labels are the configured channels and fixed outcomes."""

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = ("delivered", "retried", "failed", "gone")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
ATTEMPT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PrometheusNotifierMetrics:
    def __init__(self, registry: CollectorRegistry, *, channels: Iterable[str]) -> None:
        self.deliveries = Counter(
            "notifier_deliveries_total",
            "Delivery attempts by channel (webhook, webpush, fcm) and outcome (delivered, retried, failed, gone).",
            ["channel", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "notifier_delivery_latency_seconds",
            "From the notification being queued to the channel accepting it, by channel.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.attempt = Histogram(
            "notifier_delivery_attempt_seconds",
            "How long one delivery attempt took (the push service's or webhook's answer), by channel.",
            ["channel"],
            buckets=ATTEMPT_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "notifier_deliveries_in_flight", "Deliveries being attempted right now.", registry=registry
        )
        self.dead_lettered = Counter(
            "notifier_dead_lettered_total",
            "Notifications sent to the dead-letter topic after the last attempt, by channel.",
            ["channel"],
            registry=registry,
        )
        self._channels = frozenset(channels)
        for channel in self._channels:
            for outcome in OUTCOMES:
                self.deliveries.labels(channel, outcome)
            self.dead_lettered.labels(channel)

    def _label(self, channel: str) -> str:
        return channel if channel in self._channels else "other"

    def attempted(self, channel: str, outcome: str, attempt_s: float) -> None:
        label = self._label(channel)
        self.deliveries.labels(label, outcome).inc()
        self.attempt.labels(label).observe(attempt_s)

    def delivered(self, channel: str, latency_s: float) -> None:
        self.latency.labels(self._label(channel)).observe(max(0.0, latency_s))

    def dead_letter(self, channel: str) -> None:
        self.dead_lettered.labels(self._label(channel)).inc()
