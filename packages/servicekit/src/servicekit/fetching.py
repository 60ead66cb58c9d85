"""Fetch waits that follow the traffic: short while records flow, long once a consumer has seen none for a while.

aiokafka keeps one fetch per broker in flight and Apache Kafka holds it until a record arrives or the fetch's
wait runs out. While records flow, the wait has to stay short (KafkaTuning.fetch_max_wait_ms): a partition whose
records are still in the consumer's hands is left out of the next fetch, and what arrives for it after they are
handled waits for that fetch to come back. An idle consumer has nothing in hand, so every partition is in the
fetch in flight and the broker answers it the moment a record arrives: the wait only decides how often an idle
consumer asks. At 50 ms, every consumer of every service asked 20 times a second all day, which cost the services
and the broker CPU that a quiet stack (and every stack a test starts) does not need to spend.

So a consumer that has fetched no record for `IDLE_AFTER_S` sends its fetches with the idle wait; the first fetch
that brings records puts it back on the short wait before its next fetch is sent. Tansu answers a fetch only at
its deadline, so there the two waits are the same (ServiceSettings.kafka_tuning). The reconciler's faust
consumer keeps the short wait: its idle cost measured about the same with a ten times longer one.

This reaches into aiokafka's Fetcher (its `_fetch_max_wait_ms`, read each time a fetch is built, and
`_proc_fetch_request`, which says whether a fetch brought records); tests/servicekit/integration/
test_fetch_waits.py checks both against the pinned aiokafka on a real broker.
"""

import time
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import Fetcher

IDLE_AFTER_S = 1.0
"""How long a consumer fetches no record before its fetches wait the idle wait."""


class _FollowingFetcher(Fetcher):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's Fetcher whose fetch wait follows the traffic (see the module docstring)."""

    _busy_wait_ms: int
    _idle_wait_ms: int
    _last_records: float

    @property
    def _fetch_max_wait_ms(self) -> int:
        if time.monotonic() - self._last_records < IDLE_AFTER_S:
            return self._busy_wait_ms
        return self._idle_wait_ms

    @_fetch_max_wait_ms.setter
    def _fetch_max_wait_ms(self, wait_ms: int) -> None:
        self._busy_wait_ms = wait_ms

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        brought: bool = await super()._proc_fetch_request(assignment, node_id, request)
        if brought:
            self._last_records = time.monotonic()
        return brought


def follow_traffic(consumer: AIOKafkaConsumer, idle_wait_ms: int) -> None:
    """Make a started consumer's fetches wait `idle_wait_ms` once it is idle; its configured wait while records
    flow. A wait no longer than the configured one changes nothing."""
    fetcher = consumer._fetcher
    if fetcher is None or idle_wait_ms <= fetcher._fetch_max_wait_ms:
        return
    busy_wait_ms = fetcher._fetch_max_wait_ms
    fetcher.__class__ = _FollowingFetcher
    fetcher._fetch_max_wait_ms = busy_wait_ms
    fetcher._idle_wait_ms = idle_wait_ms
    fetcher._last_records = time.monotonic()  # a consumer just started may be about to catch up
