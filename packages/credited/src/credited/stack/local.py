"""The local stack: a broker, PostgreSQL and the four services as separate processes.

By default the broker is the embedded Tansu and PostgreSQL the embedded server; KAFKA_BOOTSTRAP and
DATABASE_URL point the stack at existing ones instead. Once the services answer, the stack makes a development
API key with every scope and writes it to `keys_path` (`.credited/dev-keys.json` for `credited up` and
`credited demo`): its clients send it as `Authorization: Bearer <key>` (`LocalStack.headers`).

Before the services, the stack starts the local payment provider (`credited.providers`, WeChat Pay and Alipay
on loopback, with test keys made at its start) and makes payments its merchant: orders on the `wechat` and
`alipay` channels are paid there, it sends the signed notifications (dropping `callback_loss` of them), and
payments asks it about an order whose notification has not come `query_delay_s` after the order.
"""

import asyncio
import concurrent.futures
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from credited.keys import create_development_key, create_service_key
from credited.stack.embedded import FRESH_STATISTICS, EmbeddedKafka, EmbeddedPostgres
from credited.stack.ports import DEFAULT_PORTS as DEFAULT_PORTS  # re-exported: tests read it here
from credited.stack.processes import Child, Workers, free_port, port_open, wait_for
from servicekit.identity import IDENTITY_SCHEMA, Scope
from servicekit.settings import default_metrics_port

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICES = ("payments", "ledger", "reconciler", "notifier")
DEV_PSP_SECRET = "sim-secret"
PAYMENTS_PROCESSES = 2
"""The deployed shape (compose, with a machine or container per copy): payments answers HTTP from this many
processes on one port (SO_REUSEPORT), so two cores parse requests when payments has them."""
RECONCILER_WORKERS = 2
"""Each reconciler side (an instance) runs as this many worker processes sharing its partitions, deployed and on
one machine alike: detection is the reconciler's promise, and with one worker its p99 was 2.5-3x longer."""
LEDGER_PAYMENTS_CONSUMERS = 2
"""The deployed shape: members of the ledger's payments group in one ledger process (the ledger's own default)."""
SHAPE = ("payments_processes", "reconciler_workers", "ledger_payments_consumers")
"""The StackConfig fields that say how many copies of a service run (the stack's shape); each is also the
environment variable of the same name in capitals."""
ONE_MACHINE = 1
"""How many payments processes and ledger payments consumers the local stack runs (`credited up`, `credited
demo`, `credited bench`): every service shares the same cores there, so a second copy adds its loops' fixed
cost and takes no core of its own. Measured side by side (credited bench-revisions, docs/benchmarks-shape.md),
one of each kept more orders a second than two on this 2-core machine. PAYMENTS_PROCESSES, RECONCILER_WORKERS
and LEDGER_PAYMENTS_CONSUMERS in the environment run other counts where the machine has the cores."""


@dataclass
class StackConfig:
    """How to run the stack. `None` for kafka_bootstrap / database_url means the embedded default."""

    run_dir: Path
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    kafka_broker: str | None = None
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    metrics_ports: dict[str, int] = field(default_factory=dict)
    """Each service's /metrics port (servicekit.metrics_server); a service not named here gets a free one.
    `from_environment` names the services' defaults: the HTTP port + 1000 (9101-9104)."""
    topic_prefix: str = ""
    db_schema_prefix: str = ""
    threshold_s: float = 120.0
    credit_loss: float = 0.0
    webhook_url: str | None = None
    webhook_secret: str = "webhook-secret"
    psp_secret: str = DEV_PSP_SECRET
    partitions: int = 6
    payments_processes: int = ONE_MACHINE
    reconciler_workers: int = RECONCILER_WORKERS
    ledger_payments_consumers: int = ONE_MACHINE
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    keys_path: Path | None = None
    """Where the development key goes (a JSON object of name to key); unset, `run_dir/dev-keys.json`."""
    local_provider: bool = True
    """Start the local WeChat Pay and Alipay provider and make payments its merchant."""
    callback_loss: float = 0.0
    """Share of the local provider's notifications it never sends (payments finds those payments by query)."""
    provider_duplicate_share: float = 0.0
    query_delay_s: float = 1.0
    """How long after an order payments first asks the provider: well under the demo's overdue threshold (5 s),
    so a payment whose notification was lost is found and credited before its deadline, which runs from the
    provider's paid_at in whole seconds (up to a second before the payment). payments waits the paid callbacks'
    lateness out on top (at most this long again). In the 20,000-order demo at 1 s it found 468 orders paid
    for 460 lost notifications, which were credited 2.9 s after payment at the median and 1 after its deadline;
    at 2 s, 3.9 s and 34 of 470."""

    @property
    def identity_schema(self) -> str:
        """The API keys' schema: the shared default, or the stack's own beside its services' schemas."""
        return f"{self.db_schema_prefix}identity" if self.db_schema_prefix else IDENTITY_SCHEMA

    @classmethod
    def from_environment(cls, run_dir: Path, **overrides: object) -> "StackConfig":
        config = cls(
            run_dir=run_dir,
            kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP") or None,
            database_url=os.environ.get("DATABASE_URL") or None,
            psp_secret=os.environ.get("PAYMENTS_PSP_SECRET_SIM") or DEV_PSP_SECRET,
            payments_processes=_copies("PAYMENTS_PROCESSES"),
            reconciler_workers=_copies("RECONCILER_WORKERS", RECONCILER_WORKERS),
            ledger_payments_consumers=_copies("LEDGER_PAYMENTS_CONSUMERS"),
        )
        base = os.environ.get("CREDITED_PORT_BASE")  # another stack on 8101-8104: CREDITED_PORT_BASE=18100
        if base:
            config.ports = {name: int(base) + i for i, name in enumerate(SERVICES, start=1)}
        for key, value in overrides.items():
            setattr(config, key, value)
        if "metrics_ports" not in overrides:
            config.metrics_ports = {name: default_metrics_port(port) for name, port in config.ports.items()}
        return config


def _copies(variable: str, default: int = ONE_MACHINE) -> int:
    """How many copies the environment asks for (`credited up` and the demo on a machine with more cores)."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{variable} must be a whole number from 1, not {text!r}")
    return int(text)


class LocalStack:
    """Starts and stops everything in order; `stop` leaves no process and no port behind."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.kafka: EmbeddedKafka | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.services: dict[str, Child | Workers] = {}
        self.instances: dict[str, Child | Workers] = {}
        self.instance_ports: dict[str, int] = {}
        self.worker_ports: dict[str, list[int]] = {}  # the HTTP ports of each reconciler side's workers
        self.metrics_ports: dict[str, int] = {}  # each process's /metrics port, by its name (`Child.name`)
        self.bootstrap = config.kafka_bootstrap or ""
        self.database_url = config.database_url or ""
        self.keys_path = config.keys_path or config.run_dir / "dev-keys.json"
        self.api_key = ""
        self.audit_key = ""
        self.provider: Child | None = None
        self.provider_url = ""
        self.provider_env: dict[str, str] = {}

    @property
    def headers(self) -> dict[str, str]:
        """What a client of the stack sends: the development key, which holds every scope."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.config.ports[service]}"

    def metrics_url(self, name: str) -> str:
        """Where the process `name` serves /metrics (its own port, servicekit.metrics_server): a service
        (payments: all its processes), an instance (`ledger-2`) or a reconciler worker (`reconciler.2`)."""
        return f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"

    def _metrics_port(self, name: str, service: str, worker: int = 1) -> int:
        """The /metrics port of process `name` of `service`: the service's configured one, and for its `worker`-th
        process (the reconciler's workers) 10 above it per worker (9113 for the second reconciler worker by
        default), so that a Prometheus configured once (deploy/prometheus/prometheus.yml) scrapes every one."""
        base = self.config.metrics_ports.get(service)
        port = base + 10 * (worker - 1) if base is not None and (name == service or worker > 1) else None
        if port is None:
            port = free_port()
        elif port_open(port):
            raise RuntimeError(f"metrics port {port} for {name} is in use (another stack? set CREDITED_PORT_BASE)")
        self.metrics_ports[name] = port
        return port

    @property
    def broker_kind(self) -> str:
        """`tansu` for the embedded broker; for an external one, KAFKA_BROKER or else `apache`."""
        if self.config.kafka_bootstrap is None:
            return "tansu"
        return self.config.kafka_broker or os.environ.get("KAFKA_BROKER", "apache")

    def start(self) -> None:
        logs = self.config.run_dir / "logs"
        self._refuse_taken_ports()
        try:
            if self.config.database_url is None:
                pg_dir = self.config.run_dir / "postgres"
                shutil.rmtree(pg_dir, ignore_errors=True)
                self.postgres = EmbeddedPostgres(pg_dir, free_port(), logs, settings=FRESH_STATISTICS)
                self.postgres.start()
                self.database_url = self.postgres.dsn
            if self.config.kafka_bootstrap is None:
                self.kafka = EmbeddedKafka(free_port(), logs)
                self.kafka.start()
                self.bootstrap = self.kafka.bootstrap
            if self.config.local_provider:
                self.start_provider()
            self.create_audit_key()
            for name in SERVICES:
                self.start_service(name)
            for name in SERVICES:
                self.wait_healthy(name)
            self.create_key()
        except BaseException:
            self.stop()
            raise

    def _refuse_taken_ports(self) -> None:
        """Before anything starts or is cleared: a second `credited up` in the same directory emptied the running
        one's PostgreSQL data directory (`start` makes it afresh) and only then found the services' ports taken."""
        c = self.config
        for kind, ports in (("port", c.ports), ("metrics port", c.metrics_ports)):
            for name, port in ports.items():
                if port_open(port):
                    raise RuntimeError(f"{kind} {port} for {name} is in use (another stack? set CREDITED_PORT_BASE)")

    def create_key(self) -> None:
        """The development key with every scope, written to `keys_path` and sent by `headers`; once a service
        has started (each migrates the key schema it is kept in)."""
        self.api_key = _apart(
            create_development_key(self.database_url, self.keys_path, schema=self.config.identity_schema)
        )
        log.info("development API key (every scope) written to %s", self.keys_path)

    def create_audit_key(self) -> None:
        """The key payments' money audit reads the ledger's credits with (audit:read only), before payments
        starts; none when the stack has no ledger."""
        if "ledger" in self.config.ports:
            self.audit_key = _apart(
                create_service_key(
                    self.database_url, "payments-audit", {Scope.AUDIT_READ}, schema=self.config.identity_schema
                )
            )

    def start_provider(self) -> None:
        """The local payment provider, notifying payments; its PAYMENTS_* settings are read before payments
        starts (its keys are made fresh at its start)."""
        c, port = self.config, free_port()
        env_file = c.run_dir / "provider-env.json"
        env_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "credited.providers", "--port", str(port), "--payments", self.url("payments")]
        argv += ["--drop", str(c.callback_loss), "--duplicate", str(c.provider_duplicate_share)]
        argv += ["--retry", "1", "3", "--env-file", str(env_file)]
        self.provider = Child("provider", argv, log_path=c.run_dir / "logs" / "provider.log", env=dict(os.environ))
        self.provider.start()
        wait_for(env_file.exists, timeout_s=60, what="the local payment provider", child=self.provider)
        self.provider_env = json.loads(env_file.read_text())
        self.provider_url = f"http://127.0.0.1:{port}"

    def provider_stats(self) -> dict[str, Any]:
        """The local provider's counts: its trades, notifications, and which it dropped."""
        answer = httpx.get(f"{self.provider_url}/dev/stats", timeout=30)
        answer.raise_for_status()
        return dict(answer.json())

    def _payments_provider_env(self) -> dict[str, str]:
        if not self.provider_env:
            return {}
        return {
            **self.provider_env,
            "PAYMENTS_CHANNEL_PROVIDERS": json.dumps({"wechat": "wechatpay", "alipay": "alipay"}),
            "PAYMENTS_QUERY_DELAY_S": str(self.config.query_delay_s),
            "PAYMENTS_QUERY_IDLE_S": "0.25",  # a due query waits at most this long for the worker
        }

    def service_env(self, name: str) -> dict[str, str]:
        c = self.config
        prefix = name.upper()
        env = {
            **os.environ,
            # The local stack runs on the development secrets above: the services refuse them anywhere else.
            "CREDITED_ENV": "development",
            "KAFKA_BOOTSTRAP": self.bootstrap,
            "KAFKA_BROKER": self.broker_kind,
            "DATABASE_URL": self.database_url,
            "CREDITED_TOPIC_PREFIX": c.topic_prefix,
            "CREDITED_TOPIC_PARTITIONS": str(c.partitions),
            "CREDITED_LOG_LEVEL": c.log_level,
            "CREDITED_IDENTITY_SCHEMA": c.identity_schema,
            f"{prefix}_HTTP_PORT": str(c.ports[name]),
            f"{prefix}_METRICS_PORT": str(self.metrics_ports.get(name, 0)),
            f"{prefix}_DB_SCHEMA": f"{c.db_schema_prefix}{name}",
            "PAYMENTS_PSP_SECRET_SIM": c.psp_secret,
            "PAYMENTS_PROCESSES": str(c.payments_processes),
            "LEDGER_PAYMENTS_CONSUMERS": str(c.ledger_payments_consumers),
            "LEDGER_FAULT_DROP_CREDIT_SHARE": str(c.credit_loss),
            "RECONCILER_THRESHOLD_S": str(c.threshold_s),
            "RECONCILER_DATA_DIR": str(c.run_dir / "reconciler"),
            "NOTIFIER_WEBHOOK_URL": c.webhook_url or "",
            "NOTIFIER_WEBHOOK_SECRET": c.webhook_secret,
            **(self._payments_provider_env() if name == "payments" else {}),
            **c.extra_env,
        }
        if name == "payments" and self.audit_key and "PAYMENTS_AUDIT_LEDGER_URL" not in c.extra_env:  # money audit
            env |= {"PAYMENTS_AUDIT_LEDGER_URL": self.url("ledger"), "PAYMENTS_AUDIT_LEDGER_API_KEY": self.audit_key}
        if "notifier" in c.ports and "PAYMENTS_STATUS_BASE_URL" not in c.extra_env:  # orders link their status page
            env["PAYMENTS_STATUS_BASE_URL"] = self.url("notifier")
        if name == "payments":  # the support API's timeline asks the other services (the caller's key)
            support = {"AUDIT_LEDGER_URL": "ledger", "RECONCILER_URL": "reconciler", "NOTIFIER_URL": "notifier"}
            for variable, service in support.items():
                if service in c.ports and f"PAYMENTS_{variable}" not in c.extra_env:
                    env.setdefault(f"PAYMENTS_{variable}", self.url(service))
        return env

    def start_service(self, name: str) -> Child | Workers:
        port = self.config.ports[name]
        if port_open(port):  # its health check would be answered by whatever holds the port
            raise RuntimeError(f"port {port} for {name} is in use (another stack? set CREDITED_PORT_BASE)")
        child: Child | Workers
        if name == "reconciler":
            child = self._reconciler(name, port, self.config.run_dir / "reconciler")
        else:
            self._metrics_port(name, name)
            child = Child(
                name,
                [sys.executable, "-m", name],
                log_path=self.config.run_dir / "logs" / f"{name}.log",
                env=self.service_env(name),
            )
        child.start()
        self.services[name] = child
        return child

    def _reconciler(self, key: str, port: int, data_dir: Path) -> Workers:
        """`reconciler_workers` processes of the reconciler (one side), sharing its partitions: the first
        answers on `port`, each has its own working directory and log."""
        members, ports = [], []
        for n in range(1, self.config.reconciler_workers + 1):
            env = self.service_env("reconciler")
            member_port = port if n == 1 else free_port()
            log_name = key if n == 1 else f"{key}.{n}"
            env["RECONCILER_HTTP_PORT"] = str(member_port)
            env["RECONCILER_METRICS_PORT"] = str(self._metrics_port(log_name, "reconciler", n))
            env["RECONCILER_DATA_DIR"] = str(data_dir if n == 1 else data_dir.with_name(f"{data_dir.name}.{n}"))
            log_path = self.config.run_dir / "logs" / f"{log_name}.log"
            members.append(Child(log_name, [sys.executable, "-m", "reconciler"], log_path=log_path, env=env))
            ports.append(member_port)
        self.worker_ports[key] = ports
        return Workers(key, members)

    def revive(self) -> list[str]:
        """Start again every service that stopped itself asking for it: exit code 75 (EX_TEMPFAIL), as
        the reconciler does when a partition would not read in order and its next run replays from the
        last commit. Compose does the same with `restart: unless-stopped`. Returns their names."""
        revived = []
        for name, child in [*self.services.items(), *self.instances.items()]:
            if isinstance(child, Workers):
                if child.revive(os.EX_TEMPFAIL):
                    revived.append(name)
            elif child.exit_code() == os.EX_TEMPFAIL:
                self.start_service(name)
                revived.append(name)
        for name in revived:
            log.warning("%s stopped itself (exit code %d); started again", name, os.EX_TEMPFAIL)
        return revived

    def start_instance(self, name: str, instance: int) -> Child | Workers:
        """One more instance of a running service: the same settings, so the same consumer groups (Kafka
        shares the partitions between the instances), with its own HTTP port, log file and (reconciler)
        working directory; a reconciler instance is `reconciler_workers` processes, as the first. `stop`
        stops it with the rest."""
        key = f"{name}-{instance}"
        port = free_port()
        child: Child | Workers
        if name == "reconciler":
            child = self._reconciler(key, port, self.config.run_dir / key)
        else:
            env = self.service_env(name)
            env[f"{name.upper()}_HTTP_PORT"] = str(port)
            env[f"{name.upper()}_METRICS_PORT"] = str(self._metrics_port(key, name))
            log_path = self.config.run_dir / "logs" / f"{key}.log"
            child = Child(key, [sys.executable, "-m", name], log_path=log_path, env=env)
        child.start()
        self.instances[key] = child
        self.instance_ports[key] = port
        return child

    def instance_url(self, name: str, instance: int) -> str:
        return f"http://127.0.0.1:{self.instance_ports[f'{name}-{instance}']}"

    def wait_healthy(self, name: str, timeout_s: float = 90) -> None:
        self._wait_healthy(name, self.url(name), self.services[name], timeout_s)

    def wait_instance_healthy(self, name: str, instance: int, timeout_s: float = 90) -> None:
        key = f"{name}-{instance}"
        self._wait_healthy(key, self.instance_url(name, instance), self.instances[key], timeout_s)

    def _wait_healthy(self, key: str, url: str, child: Child | Workers, timeout_s: float) -> None:
        """Healthy on its HTTP port, and its /metrics listener up: a service run as several copies on one port
        (payments) answers /healthz from whichever copy is up first, while /metrics comes from the first copy,
        which may still be starting (a bench that scraped it at once was refused)."""
        if isinstance(child, Workers):
            for member, port in zip(child.members, self.worker_ports[key], strict=True):
                _wait_healthy(f"http://127.0.0.1:{port}/healthz", member.name, member, timeout_s)
                self._wait_metrics(member.name, member, timeout_s)
        else:
            _wait_healthy(f"{url}/healthz", key, child, timeout_s)
            self._wait_metrics(key, child, timeout_s)

    def _wait_metrics(self, name: str, child: Child, timeout_s: float) -> None:
        port = self.metrics_ports.get(name)
        if port is not None:
            _wait_healthy(f"http://127.0.0.1:{port}/healthz", f"{name}'s /metrics", child, timeout_s)

    def stop(self) -> None:
        started = time.monotonic()
        for key in reversed(list(self.instances)):
            self.instances.pop(key).stop()
        for name in reversed(SERVICES):
            child = self.services.pop(name, None)
            if child is not None:
                child.stop()
        if self.provider is not None:
            self.provider.stop()
            self.provider = None
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        log.info("stack stopped in %.1fs", time.monotonic() - started)


def _apart(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` in a loop of its own: `start` is called from threads that may already run one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


def _wait_healthy(url: str, name: str, child: Child, timeout_s: float) -> None:
    """Poll `url` through one client: `httpx.get` builds a client, and its TLS context, at every call, which
    cost 21 ms of CPU a probe here (0.4 ms through one client), ten probes a second per service starting."""
    with httpx.Client(timeout=1) as client:

        def healthy() -> bool:
            try:
                return client.get(url).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout_s=timeout_s, what=f"{name} at {url}", child=child)
