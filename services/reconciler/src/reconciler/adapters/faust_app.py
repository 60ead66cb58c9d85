"""The faust-streaming side of the reconciler: the app, its table, the agent, the ticker and the web pages.

The agent takes the records faust has handed it in batches and gives each batch to a round (rounds.py):
decoded once, applied to the pure engine, announced together, acknowledged once, written once per order.
The ticker runs rounds of timers between the agent's. faust's producer and
consumer batch as the shared KafkaTuning says (servicekit.settings).
"""

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import faust
from aiokafka.errors import IllegalStateError
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter, ValidationError

from contracts.base import OrderId
from contracts.topics import Topic
from reconciler.adapters.announcer import KafkaAnnouncer
from reconciler.adapters.broker_watch import WATCHED, BrokerWatch
from reconciler.adapters.consumer import ReconcilerTransport
from reconciler.adapters.metrics import PrometheusObservations
from reconciler.adapters.metrics_listener import MetricsListener
from reconciler.adapters.offsets import BrokerOffsets
from reconciler.adapters.page_keys import requires
from reconciler.adapters.peers import PEER_HEADER, PeerGrants
from reconciler.adapters.positions import ProcessedPositions
from reconciler.adapters.rewind import STUCK_AFTER_S, RecoveryWatch, Rewinder, Seek, TailWatch
from reconciler.adapters.rounds import Rounds, batches, stop
from reconciler.adapters.table import FaustOrderStates, OrderTable, register_codec
from reconciler.adapters.ticker import Ticker
from reconciler.config import Settings
from reconciler.domain import OrderState
from reconciler.engine import Engine
from reconciler.watermarks import Watermarks
from servicekit.identity import Authenticator, Scope
from servicekit.kafka_security import aiokafka_security, faust_credentials
from servicekit.retrying import Readiness

log = logging.getLogger(__name__)

PRODUCER_REQUEST_TIMEOUT_S = 120.0
"""How long the producer keeps a record through a broker outage before refusing it (aiokafka expires a batch whose
partition has had no leader this long): a changelog record refused stops the worker (rounds.py), so a broker
restart shorter than this costs no exit. A round waits for its announcements for rounds.ACK_TIMEOUT_S at most
whatever this is; faust's default (20 minutes) would keep records that long for a broker that never answers."""


def faust_options(settings: Settings) -> dict[str, Any]:
    """faust's settings for a credited worker: batching from the shared KafkaTuning, nothing left to a
    library default that matters for money (acks from every in-sync replica, earliest offsets first)."""
    tuning = settings.kafka_tuning
    return {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        # The reconciler's own SCRAM user where the broker asks for one (None: PLAINTEXT, a laptop's broker).
        "broker_credentials": faust_credentials(settings),
        "store": "memory://",
        "datadir": str(settings.data_dir),
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": 1,
        "topic_disable_leader": True,
        "table_standby_replicas": 0,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_linger": tuning.linger_ms / 1000,
        "producer_max_batch_size": tuning.max_batch_bytes,
        "producer_compression_type": None if tuning.compression == "none" else tuning.compression,
        "producer_request_timeout": PRODUCER_REQUEST_TIMEOUT_S,
        # As servicekit's producers (aiokafka's default; faust's is 1,000,000): dead letters are sent whole up to
        # servicekit.kafka.DEAD_LETTER_MAX_BYTES, below it, and trimmed above it (adapters/announcer.dead_letter).
        "producer_max_request_size": 1024 * 1024,
        "broker_max_poll_records": tuning.fetch_max_records,
        # Tansu holds every group join for half the session timeout (faust's 60 s default: 30 s).
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": 1.0,
        "broker_rebalance_timeout": settings.session_timeout_s,
        "broker_commit_interval": 1.0,
    }


WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def advertised_host(bind: str) -> str:
    """Where the other workers reach this one (faust's canonical URL, told in the consumer group's metadata; a
    worker asks the one holding an order for its timeline there): the address it listens on, unless that is every
    address (compose's and a pod's 0.0.0.0), which names no worker and would be the same for all of them; then
    this host's name, which in a container is the container's own, resolvable by its neighbours."""
    return socket.gethostname() if bind in WILDCARDS else bind


def build_app(settings: Settings, registry: CollectorRegistry, authenticator: Authenticator) -> faust.App:
    """The faust app: one agent joining payments.events and ledger.events by order id, plus the ticker, and
    its pages, each business page asking `authenticator` for a key with its scope. /metrics is not one of them:
    it has a listener of its own (MetricsListener)."""
    prefix = settings.topic_prefix
    app = faust.App(
        f"{prefix}credited-reconciler",
        **faust_options(settings),
        web_enabled=True,
        web_host=advertised_host(settings.http_host),
        web_port=settings.http_port,
        web_bind=settings.http_host,
        # faust's own pages would answer anyone: /table/{name}/{key}/ serves an order's state, /router/ the
        # workers' assignment. The timeline (behind a key) is how an order is read; the rest stays off.
        web_router_enabled=False,
        web_tables_enabled=False,
    )
    inputs = (Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_EVENTS.qualified(prefix))
    positions = ProcessedPositions(inputs)
    transport = ReconcilerTransport(
        app,
        positions,
        idempotent=settings.idempotent_producer,
        fetch_max_wait_ms=settings.kafka_tuning.fetch_max_wait_ms,
        tansu=settings.kafka_broker == "tansu",
    )
    app.transport = transport
    app.add_dependency(MetricsListener(registry, *settings.metrics_address))
    table, states = _order_states(app, settings)
    engine = Engine(states, settings.policy())
    table.restored_horizon = engine.restore_horizon  # restored with the table, before its partition is read
    observe = PrometheusObservations(registry, channels=settings.metric_channels)
    seek = _reading_again(app, observe)
    rewinder, watermarks = Rewinder(seek, time.monotonic), Watermarks(inputs)
    offsets = BrokerOffsets(
        settings.kafka_bootstrap, tansu=settings.kafka_broker == "tansu", security=aiokafka_security(settings)
    )
    rounds = Rounds(
        engine=engine,
        states=states,
        announcer=_announcer(settings, observe),
        observe=observe,
        positions=positions,
        watermarks=watermarks,
        rewinder=rewinder,
        producer=app.producer,
        dead_letters=Topic.DEAD_LETTER.qualified(prefix),
        group=app.conf.id,
        first_readable=offsets.first_readable,
    )
    channels: list[Any] = []  # the agent's stream channel, once it runs

    def waiting() -> bool:
        return any(not c.empty() for c in channels) or rounds.applied_within(STUCK_AFTER_S)

    tail = TailWatch(rewinder, time.monotonic, waiting, _stuck_for_good, past_unreadable=rounds.past_unreadable)
    recovery = RecoveryWatch(seek, time.monotonic, _recovery_stuck)
    ticker = Ticker(app, inputs, rounds, watermarks, offsets, tail, settings.tick_s, recovery)

    async def before_revoke(revoked: set[TP]) -> None:
        async with rounds.lock:  # the round in progress ends first; none touches these partitions after
            positions.revoking(revoked)
            await rounds.settled()  # so that the commit of the revocation is where the agent is

    transport.before_revoke, transport.on_assigned = before_revoke, ticker.handed
    source = app.topic(*inputs, key_serializer="raw", value_serializer="raw")
    _agent(app, source, rounds, settings.kafka_tuning.fetch_max_records, settings.round_linger_ms / 1000, channels)

    @app.task
    async def tick() -> None:
        await ticker.run()

    readiness = Readiness(watched=WATCHED)
    watch = BrokerWatch(settings.kafka_bootstrap, readiness, security=aiokafka_security(settings))

    @app.task
    async def watch_broker() -> None:
        await watch.run(lambda: app.should_stop)

    # Without a peer secret (only where the worker's entry point would refuse to start: tests building the app in
    # production mode) a worker answers for the orders it has and names what is missing for the others.
    peers = PeerGrants(secrets) if (secrets := settings.peer_secrets()) else None
    _pages(app, table, states, authenticator, peers, readiness, lambda: _waiting_for(app, ticker))
    return app


def _waiting_for(app: faust.App, ticker: Ticker) -> str | None:
    """What the worker waits for before it detects anything, or None once it works. Until its consumer has been
    handed its first assignment it reads nothing, and faust is neither rebalancing nor recovering then: a
    worker whose group join or changelog creation hung looked ready while it detected nothing."""
    if not ticker.joined:
        return "joining its consumer group: no partitions handed to this worker yet"
    if app.rebalancing:
        return "partitions moving between workers"
    if app.in_recovery:
        return "restoring its table from the changelog"
    return None


def _order_states(app: faust.App, settings: Settings) -> tuple[OrderTable, FaustOrderStates]:
    register_codec()
    table = app.tables.add(
        OrderTable(
            app, name="order-state", default=None, beacon=app.tables.beacon, partitions=settings.topic_partitions
        )
    )
    changelog = table.changelog_topic.get_topic_name()

    async def send_changelog(key: str, value: bytes | None, partition: int | None = None) -> Any:
        if partition is None:
            partition = table.partition_for_key(key)
        return await app.producer.send(changelog, key.encode(), value, partition, None, None)

    return table, FaustOrderStates(table.data, send_changelog)


def _announcer(settings: Settings, observe: PrometheusObservations) -> KafkaAnnouncer:
    prefix = settings.topic_prefix
    topics = {
        "status": Topic.ORDERS_STATUS.qualified(prefix),
        "ledger": Topic.LEDGER_COMMANDS.qualified(prefix),
        "payments": Topic.PAYMENTS_COMMANDS.qualified(prefix),
        "cases": Topic.SUPPORT_CASES.qualified(prefix),
    }
    unbuildable = observe.dead_letters.labels("unbuildable").inc
    return KafkaAnnouncer(topics, Topic.DEAD_LETTER.qualified(prefix), unbuildable)


def _reading_again(app: faust.App, observe: PrometheusObservations) -> Seek:
    async def seek(topic: str, partition: int, offset: int, why: str) -> None:
        log.warning("%s[%d]: reading again from %d (%s)", topic, partition, offset, why)
        observe.read_again(topic, why)
        try:
            await app.consumer.rewind(TP(topic, partition), offset)
        except IllegalStateError:  # revoked meanwhile: its next owner starts at the committed offset
            log.info("%s[%d] is no longer assigned; not read again", topic, partition)

    return seek


def _stuck_for_good(topic: str, partition: int, offset: int) -> None:
    stop(f"{topic}[{partition}] still stands at {offset} after reading it again from there")


def _recovery_stuck(topic: str, partition: int, remaining: int) -> None:
    stop(f"the table's recovery of {topic}[{partition}] still misses {remaining} records after reading it again")


def _agent(app: faust.App, source: Any, rounds: Rounds, most: int, linger_s: float, channels: list[Any]) -> None:
    @app.agent(source)
    async def join(stream: faust.StreamT) -> None:
        """The records faust hands over, in rounds (rounds.batches). (`stream.take_events` was tried first: with
        it, faust never handed this agent a record of payments.events on Apache Kafka, every partition standing
        still at 0.)"""
        channels[:] = [stream.channel]
        async for batch in batches(stream.events(), lambda: not stream.channel.empty(), most, linger_s):
            await rounds.records(batch)


_ORDER_ID = TypeAdapter(OrderId)
"""An order id goes into another worker's address only in the contract's shape."""


def _is_order_id(value: str) -> bool:
    try:
        _ORDER_ID.validate_python(value)
    except ValidationError:
        return False
    return True


def _pages(
    app: faust.App,
    table: OrderTable,
    states: FaustOrderStates,
    authenticator: Authenticator,
    peers: PeerGrants | None,
    readiness: Readiness,
    waiting_for: Callable[[], str | None],
) -> None:
    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            """503 naming the broker while it does not answer (BrokerWatch), and naming what the worker waits for
            until it has joined its group, and while partitions move or its table is restored."""
            waiting = waiting_for()
            status, body = readiness.health(waiting is None, waiting or "")
            return self.json(body, status=status)

    @app.page("/v1/orders/{order_id}/timeline")
    class Timeline(View):
        @requires(Scope.SUPPORT_READ, authenticator, peers=peers)
        async def get(self, request: Request, order_id: str) -> Response:
            """Every event and status of one order in time order, for support staff and on-call engineers with
            a support:read key, from whichever worker has the order: this worker checks the key and asks that one
            with a grant for this order alone (reconciler.adapters.peers), never with the caller's key, which
            would go to whatever address the group's metadata names. An order settled longer ago than the
            retention is answered by the services that own its data. (faust's table_route hashes the key with
            its producer's metadata, which a worker that has not written to the changelog yet does not have: it
            answers 500.)"""
            if not _is_order_id(order_id):
                detail = "order_id must be 1-64 letters, digits or _ . : - (the order id payments answered)"
                return self.json({"error": "invalid_order_id", "detail": detail}, status=422)
            # Only the state of an order this worker has: one whose partition moved away is its new owner's.
            state = states.get(order_id) if _assigned_here(app, table, order_id) else None
            owner = None if state is not None or request.query.get("routed") else _owner(app, table, order_id)
            if owner is not None:
                if peers is None:
                    detail = (
                        f"another worker has order {order_id}; this one cannot ask it: RECONCILER_PEER_SECRET unset"
                    )
                    return self.json({"error": "unavailable", "detail": detail}, status=503)
                url = f"{owner.rstrip('/')}/v1/orders/{order_id}/timeline"
                granted = {PEER_HEADER: peers.grant(order_id)}
                try:
                    async with app.http_client.get(
                        url, params={"routed": "1"}, headers=granted, timeout=PEER_TIMEOUT
                    ) as answer:
                        return self.bytes(await answer.read(), content_type="application/json", status=answer.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # The worker the group's metadata names is gone (killed, and in the metadata until its
                    # session times out) or unreachable: the caller may ask again once the partitions moved.
                    detail = f"the worker that has order {order_id} did not answer ({type(exc).__name__}); ask again"
                    return self.json({"error": "unavailable", "detail": detail}, status=503)
            if state is None and not _has(app, table, order_id):
                detail = "the partitions are moving between workers; ask again in a few seconds"
                return self.json({"error": "not_ready", "detail": detail}, status=503)
            if state is None:
                detail = f"no order {order_id} settled within the retention"
                return self.json({"error": "unknown_order", "detail": detail}, status=404)
            return self.json(_timeline(state))


PEER_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
"""How long a worker waits for the worker that has an order to answer its timeline: under the session timeout."""


def _owner(app: faust.App, table: OrderTable, order_id: str) -> str | None:
    """The web address of the other worker that has `order_id`'s partition, if one has."""
    topic, partition = table.changelog_topic.get_topic_name(), table.partition_for_key(order_id)
    here = str(app.conf.canonical_url).rstrip("/")
    for host, topics in app.router.table_metadata(table.name).items():
        if partition in topics.get(topic, ()) and str(host).rstrip("/") != here:
            return str(host)
    return None


def _assigned_here(app: faust.App, table: OrderTable, order_id: str) -> bool:
    """Whether `order_id`'s partition is in this worker's assignment (restored or not)."""
    tp = TP(table.changelog_topic.get_topic_name(), table.partition_for_key(order_id))
    return tp in app.assignor.assigned_actives()


def _has(app: faust.App, table: OrderTable, order_id: str) -> bool:
    """Whether this worker has `order_id`'s partition, restored."""
    return not app.rebalancing and not app.in_recovery and _assigned_here(app, table, order_id)


def _timeline(state: OrderState) -> dict[str, Any]:
    return {
        "order_id": state.order_id,
        "user_id": state.user_id,
        "amount": state.amount,
        "currency": state.currency,
        "channel": state.channel,
        "phase": state.phase.value,
        "status": state.status.value,
        "deadline": state.deadline.isoformat() if state.deadline else None,
        "retry_attempts": state.attempts,
        "anomaly": state.anomaly,
        "timeline": [{"what": what, "at": at.isoformat()} for what, at in sorted(state.history, key=lambda h: h[1])],
    }
