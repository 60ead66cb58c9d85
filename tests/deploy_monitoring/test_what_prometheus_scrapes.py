"""What Prometheus actually gets to read: the consumer-lag series of a service run as several copies
(servicekit multiprocess mode, compose's PAYMENTS_PROCESSES=2), and the targets of the local stack's
Prometheus configuration against the metrics ports `credited up` gives its processes."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from credited.stack import local
from credited.stack.local import LocalStack, StackConfig

ROOT = Path(__file__).resolve().parents[2]


def test_a_partition_that_left_a_multi_process_service_leaves_no_consumer_lag_series_behind(tmp_path: Path) -> None:
    """ConsumerMetrics.lag promises that "partitions it no longer holds are dropped, so a rebalance leaves no
    stale series behind". With the service run as several copies (payments in compose: PAYMENTS_PROCESSES=2,
    its /metrics summed from prometheus_client's multiprocess files) Gauge.remove only forgets the in-memory
    child: the mmap file keeps the partition's last lag and /metrics exports it for ever. When a rebalance
    (a `payments-worker` instance joining, typically because lag was high) takes the partition away, the old
    instance keeps exporting its frozen lag and the new owner exports the live one: `sum by (service, group)`
    counts it twice and ConsumerLagHigh keeps firing on a group that has caught up."""
    script = textwrap.dedent(
        """
        from prometheus_client import CollectorRegistry, generate_latest
        from servicekit.metrics import ServiceMetrics
        from servicekit.metrics_server import all_processes

        metrics = ServiceMetrics("payments", CollectorRegistry())
        consumer = metrics.consumer("payments", ["orders.status"])
        consumer.lag({("orders.status", 0): 5000, ("orders.status", 1): 3})
        consumer.lag({("orders.status", 1): 3})  # partition 0 went to another instance of the group
        print(generate_latest(all_processes(metrics.registry)).decode())
        """
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    scraped = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    lag_lines = [line for line in scraped.splitlines() if line.startswith("credited_consumer_lag_records{")]
    assert any('partition="1"' in line for line in lag_lines), scraped
    stale = [line for line in lag_lines if 'partition="0"' in line and float(line.rsplit(" ", 1)[1]) != 0]
    assert not stale, f"/metrics still exports the lag of a partition this service no longer holds: {stale}"


def test_the_local_prometheus_scrapes_every_reconciler_worker_the_local_stack_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/prometheus/prometheus.yml is the Prometheus "for the local stack (`credited up`)". `credited up`
    runs the reconciler as RECONCILER_WORKERS=2 processes sharing its partitions; each serves /metrics on its
    own port, the second on a random free port, and nothing scrapes it. Every reconciler_* series of the
    partitions the second worker holds (about half the orders) is missing: OrdersOverdue, CreditWithoutPayment,
    RemediationFailing, OrdersEscalated and the SLO cannot fire for those orders, ReconcilerStalled cannot see
    that worker stall, and ServiceDown cannot see it die."""
    monkeypatch.setattr(local, "port_open", lambda port: False)  # other stacks on this machine do not matter
    monkeypatch.delenv("RECONCILER_WORKERS", raising=False)
    stack = LocalStack(StackConfig.from_environment(tmp_path))
    workers = stack._reconciler("reconciler", stack.config.ports["reconciler"], tmp_path / "reconciler")
    started = {member.name: stack.metrics_ports[member.name] for member in workers.members}
    assert len(started) == 2, started

    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "reconciler")
    scraped = {int(target.rsplit(":", 1)[1]) for static in job["static_configs"] for target in static["targets"]}
    unscraped = {name: port for name, port in started.items() if port not in scraped}
    assert not unscraped, f"reconciler workers whose /metrics the local Prometheus never scrapes: {unscraped}"
