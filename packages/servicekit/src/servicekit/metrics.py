"""The metrics every credited service exposes through the service kit, on the service's own registry.

Names start with `credited_` and carry a `service` label, so one rule or dashboard covers every service
that uses the kit. Labels are bounded: service, consumer group, topic and partition, route templates,
and a small fixed set of dead-letter reason kinds; never an order id or a raw URL path.
"""

import weakref
from collections.abc import Iterable
from enum import StrEnum
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

HTTP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
POLL_RECORDS_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)

_BY_REGISTRY: "weakref.WeakKeyDictionary[CollectorRegistry, ServiceMetrics]" = weakref.WeakKeyDictionary()


class DeadLetterKind(StrEnum):
    """Why a record went to the dead-letter topic, as a bounded label."""

    UNDECODABLE = "undecodable"
    REJECTED = "rejected"
    HANDLER_FAILED = "handler_failed"


class ServiceMetrics:
    """The credited_* metrics of one service: consumers, dead letters, outbox and HTTP."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.service = service
        self.registry = registry
        self.consumer_records = Counter(
            "credited_consumer_records_total",
            "Records consumed, by consumer group and topic (dead-lettered ones included).",
            ["service", "group", "topic"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "credited_consumer_lag_records",
            "Records in the partition not yet processed by the group: end offset minus position.",
            ["service", "group", "topic", "partition"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.consumer_poll_records = Histogram(
            "credited_consumer_poll_records",
            "Records per poll, handled as one batch in one database transaction, by consumer group.",
            ["service", "group"],
            buckets=POLL_RECORDS_BUCKETS,
            registry=registry,
        )
        self.consumer_poll_duration = Histogram(
            "credited_consumer_poll_duration_seconds",
            "Time from a poll's records arriving to their offsets being committed, by consumer group.",
            ["service", "group"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.consumer_fallbacks = Counter(
            "credited_consumer_fallbacks_total",
            "Polls whose batch failed and that were handled again one message at a time, by consumer group.",
            ["service", "group"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "credited_dead_letters_total",
            "Records sent to the dead-letter topic, by consumer group and kind of reason.",
            ["service", "group", "reason_kind"],
            registry=registry,
        )
        self.rejections = Counter(
            "credited_rejected_messages_total",
            "Messages a handler refused for good (dead-lettered as rejected), by consumer group and the rule broken.",
            ["service", "group", "reason"],
            registry=registry,
        )
        # Several processes of one service (servicekit.runner) sample the same gauges: the latest sample wins.
        self.outbox_backlog = Gauge(
            "credited_outbox_backlog_records",
            "Outbox rows waiting to be published.",
            ["service"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.dependency_ready = Gauge(
            "credited_dependency_ready",
            "1 while the service reaches the dependency (database, broker); 0 while its retry loops or probes find"
            " it away, when /healthz answers 503 (the lowest of the service's copies).",
            ["service", "dependency"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.outbox_oldest_age = Gauge(
            "credited_outbox_oldest_age_seconds",
            "Age of the oldest outbox row waiting to be published (0 when empty).",
            ["service"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.outbox_published = Counter(
            "credited_outbox_published_total", "Outbox rows published to Kafka.", ["service"], registry=registry
        )
        self.http_requests = Counter(
            "credited_http_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["service", "route", "method", "code"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "credited_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["service", "route"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.outbox_published.labels(service)
        _BY_REGISTRY[registry] = self

    @staticmethod
    def on(registry: CollectorRegistry) -> "ServiceMetrics | None":
        """The service metrics built on `registry`, if any (how the HTTP app finds them)."""
        return _BY_REGISTRY.get(registry)

    def consumer(self, group: str, topics: Iterable[str], topic_prefix: str = "") -> "ConsumerMetrics":
        return ConsumerMetrics(self, group, list(topics), topic_prefix)

    def dependency(self, dependency: str, ready: bool) -> None:
        """Whether the service reaches `dependency` now (servicekit.retrying.Readiness's on_change)."""
        self.dependency_ready.labels(self.service, dependency).set(1 if ready else 0)

    def outbox(self) -> "OutboxMetrics":
        return OutboxMetrics(self)

    def http_request(self, route: str, method: str, code: int, duration_s: float) -> None:
        self.http_requests.labels(self.service, route, method, str(code)).inc()
        self.http_duration.labels(self.service, route).observe(duration_s)


class ConsumerMetrics:
    """One consumer group's metrics, labelled with the unprefixed group and topic names (a test's topic
    prefix must not make a new series per test)."""

    def __init__(self, metrics: ServiceMetrics, group: str, topics: list[str], topic_prefix: str = "") -> None:
        self._m = metrics
        self.group = group
        self._prefix = topic_prefix
        self._partitions: set[tuple[str, int]] = set()
        # Every series exists from the start, so the first increment shows in rate() and increase().
        for topic in topics:
            metrics.consumer_records.labels(metrics.service, group, topic)
        for kind in DeadLetterKind:
            metrics.dead_letters.labels(metrics.service, group, kind.value)
        metrics.consumer_fallbacks.labels(metrics.service, group)

    def topic(self, qualified: str) -> str:
        return qualified.removeprefix(self._prefix)

    def consumed(self, topic: str, records: int = 1) -> None:
        """`records` of `topic` (the qualified name, as the broker has it) were processed and committed."""
        self._m.consumer_records.labels(self._m.service, self.group, self.topic(topic)).inc(records)

    def polled(self, records: int, seconds: float, *, fell_back: bool) -> None:
        """A poll of `records` was handled and committed in `seconds`; `fell_back` if one message at a time."""
        self._m.consumer_poll_records.labels(self._m.service, self.group).observe(records)
        self._m.consumer_poll_duration.labels(self._m.service, self.group).observe(seconds)
        if fell_back:
            self._m.consumer_fallbacks.labels(self._m.service, self.group).inc()

    def dead_lettered(self, kind: DeadLetterKind, label: str | None = None) -> None:
        """A record went to the dead-letter topic; a rejected one is also counted by the rule it broke."""
        self._m.dead_letters.labels(self._m.service, self.group, kind.value).inc()
        if label is not None:
            self._m.rejections.labels(self._m.service, self.group, label).inc()

    def lag(self, lags: dict[tuple[str, int], int]) -> None:
        """The lag of every partition this member holds now, by (qualified topic, partition); partitions
        it no longer holds are dropped, so a rebalance leaves no stale lag behind. A service run as several
        copies (prometheus_client's multiprocess files) cannot drop a series from its file: it is set to 0
        first, so the partition's new owner alone counts its lag."""
        now = {(self.topic(topic), partition): lag for (topic, partition), lag in lags.items()}
        for topic, partition in self._partitions - now.keys():
            self._m.consumer_lag.labels(self._m.service, self.group, topic, str(partition)).set(0)
            self._m.consumer_lag.remove(self._m.service, self.group, topic, str(partition))
        for (topic, partition), lag in now.items():
            self._m.consumer_lag.labels(self._m.service, self.group, topic, str(partition)).set(max(0, lag))
        self._partitions = set(now)


class OutboxMetrics:
    """The outbox relay's metrics."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._m = metrics

    def published(self, rows: int) -> None:
        self._m.outbox_published.labels(self._m.service).inc(rows)

    def backlog(self, rows: int, oldest_age_s: float) -> None:
        self._m.outbox_backlog.labels(self._m.service).set(rows)
        self._m.outbox_oldest_age.labels(self._m.service).set(oldest_age_s)
