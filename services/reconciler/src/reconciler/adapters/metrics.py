"""PrometheusObservations: the reconciler's metrics, on an injected registry; Tally: a round's observations,
kept until the round is durable (an undone round is done again and must not count twice).

Labels are bounded: an order's channel, the API caller's to choose, labels a series only if it is one of the
channels payments labels by (PAYMENTS_METRIC_CHANNELS, servicekit.metric_channels), any other is `other`."""

from collections import Counter as Counts
from collections.abc import Iterable
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from servicekit.metric_channels import DEFAULT_METRIC_CHANNELS, MetricChannels

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)

DEAD_LETTER_KINDS = ("undecodable", "handler_failed", "unbuildable")
"""Why the reconciler dead-letters a record: an input that does not decode, or whose handling fails; an announcement
it cannot build. Each series is there at 0 from the start: one that appeared at 1 with the first dead letter would
show Prometheus no increase (DeadLetterGrowing would miss the first of each kind after every start)."""


class PrometheusObservations:
    def __init__(self, registry: CollectorRegistry, *, channels: Iterable[str] = DEFAULT_METRIC_CHANNELS) -> None:
        self._channels = MetricChannels(channels)
        counter, gauge = partial(Counter, registry=registry), partial(Gauge, registry=registry)
        histogram = partial(Histogram, registry=registry)
        self.events = counter("reconciler_events_total", "Input events applied, by type.", ["type"])
        self.paid_orders = counter("reconciler_orders_paid_total", "Orders the provider confirmed paid.", ["channel"])
        self.credited_orders = counter("reconciler_orders_credited_total", "Paid orders credited.", ["channel"])
        self.pay_to_credit = histogram(
            "reconciler_pay_to_credit_seconds", "Payment to credit, event time.", ["channel"], buckets=LATENCY_BUCKETS
        )
        self.flagged_orders = counter(
            "reconciler_overdue_flagged_total",
            "Orders flagged overdue, by why: payment_late when the payment reached the reconciler only after the "
            "deadline (a lost callback found late by payments' query), credit_missing otherwise.",
            ["channel", "cause"],
        )
        # For a payment_late flag the detector is timed from the payment's arrival: it could not flag what it had
        # not read, and the minutes before (the provider's, payments' query schedule) would say nothing about it.
        # That wait is the flagged counter's cause, and payments' own metrics (payments_recovered_by_query_total).
        self.detection = histogram(
            "reconciler_detection_latency_seconds",
            "Flag time minus when the order could first be flagged: its deadline, or the payment's arrival when "
            "that came after it (cause payment_late).",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5, 10, 30),
        )
        self.remediations = counter(
            "reconciler_remediations_total",
            "Remediation steps by action and outcome: requested when sent, then succeeded, failed or escalated "
            "once the reconciler learns it (once per order and outcome); resent for each re-send of a BlockCredit or "
            "IssueRefund that had no answer; skipped for a compensation whose currency RECONCILER_COMPENSATION does "
            "not list.",
            ["action", "outcome"],
        )
        self.escalations = counter(
            "reconciler_escalations_total", "Orders escalated to a person (needs_support), by reason.", ["reason"]
        )
        self.anomalies = counter("reconciler_anomalies_total", "Anomalies by kind.", ["kind"])
        self.overdue_now = gauge(
            "reconciler_orders_overdue", "Paid orders past their deadline and not credited or refunded."
        )
        self.watermark_lag = gauge(
            "reconciler_watermark_lag_seconds",
            "Now minus the oldest safe time over assigned partitions (how far behind the streams are known); for a "
            "partition without one yet, now minus when it was assigned.",
        )
        self.skipped_records = counter(
            "reconciler_records_skipped_total",
            "Records handed over before an earlier one of their partition, skipped and read again in order.",
            ["topic"],
        )
        self.reads_again = counter(
            "reconciler_partition_reads_again_total",
            "Partitions read again from the first record the agent is missing: after a record came past it "
            "(hole), standing still below the broker's end offset (stuck), or a changelog partition whose "
            "table recovery stands still (recovery).",
            ["topic", "reason"],
        )
        self.batch_records = histogram(
            "reconciler_batch_records",
            "Records per round: applied, announced, then acknowledged and written together.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
        )
        self.table_orders = gauge(
            "reconciler_table_orders", "Orders in this worker's table (settled ones within the retention too)."
        )
        self.assigned_partitions = gauge(
            "reconciler_assigned_partitions", "Input partitions this worker has, table restored and timers built."
        )
        self.rounds_undone = counter(
            "reconciler_rounds_undone_total",
            "Rounds whose announcements the broker refused or did not acknowledge: undone and done again.",
        )
        self.dead_letters = counter(
            "reconciler_dead_lettered_total",
            "Records sent to the dead-letter topic: input that does not decode or whose handling fails, announcements"
            " that cannot be built.",
            ["kind"],
        )
        for kind in DEAD_LETTER_KINDS:
            self.dead_letters.labels(kind)
        self.expired_orders = counter(
            "reconciler_orders_expired_total", "Settled orders dropped from the table once their retention ended."
        )

    def event(self, kind: str) -> None:
        self.events.labels(kind).inc()

    def paid(self, channel: str) -> None:
        self.paid_orders.labels(self._channels.label(channel)).inc()

    def credited(self, channel: str, pay_to_credit_s: float) -> None:
        label = self._channels.label(channel)
        self.credited_orders.labels(label).inc()
        self.pay_to_credit.labels(label).observe(max(0.0, pay_to_credit_s))

    def flagged(self, channel: str, cause: str, detection_s: float) -> None:
        self.flagged_orders.labels(self._channels.label(channel), cause).inc()
        self.detection.observe(max(0.0, detection_s))

    def remediation(self, action: str, outcome: str) -> None:
        self.remediations.labels(action, outcome).inc()

    def anomaly(self, kind: str) -> None:
        self.anomalies.labels(kind).inc()

    def escalation(self, reason: str) -> None:
        self.escalations.labels(reason).inc()

    def skipped(self, topic: str) -> None:
        self.skipped_records.labels(topic).inc()

    def read_again(self, topic: str, reason: str) -> None:
        self.reads_again.labels(topic, reason).inc()


class Tally:
    """The Observations of one round, handed to PrometheusObservations once the round is durable."""

    def __init__(self) -> None:
        self.events: Counts[str] = Counts()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def event(self, kind: str) -> None:
        self.events[kind] += 1

    def paid(self, channel: str) -> None:
        self.calls.append(("paid", (channel,)))

    def credited(self, channel: str, pay_to_credit_s: float) -> None:
        self.calls.append(("credited", (channel, pay_to_credit_s)))

    def flagged(self, channel: str, cause: str, detection_s: float) -> None:
        self.calls.append(("flagged", (channel, cause, detection_s)))

    def remediation(self, action: str, outcome: str) -> None:
        self.calls.append(("remediation", (action, outcome)))

    def anomaly(self, kind: str) -> None:
        self.calls.append(("anomaly", (kind,)))

    def escalation(self, reason: str) -> None:
        self.calls.append(("escalation", (reason,)))

    def apply(self, observe: PrometheusObservations) -> None:
        for kind, n in self.events.items():
            observe.events.labels(kind).inc(n)
        for name, args in self.calls:
            getattr(observe, name)(*args)
