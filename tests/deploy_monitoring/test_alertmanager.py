"""Alertmanager: the config is valid, pages, critical alerts and warnings reach their own receivers, and one outage
pages once (inhibition checked on a real Alertmanager on loopback)."""

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from credited.stack.processes import free_port
from tests.deploy_monitoring.conftest import ALERTMANAGER_CONFIG, load_yaml, stop, tool, wait_until_ready


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("amtool"), *args], capture_output=True, text=True, timeout=60, check=False)


def test_the_alertmanager_config_is_valid_for_amtool() -> None:
    checked = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=OrdersOverdue", "severity=page"], "pager"),
        (["alertname=SupportCaseUnacknowledged", "severity=critical", "kind=needs_support"], "pager"),
        (["alertname=ConsumerLagHigh", "severity=warning"], "tickets"),
        (["alertname=SomethingNew"], "tickets"),
    ],
)
def test_pages_and_warnings_reach_their_own_receivers(labels: list[str], receiver: str) -> None:
    routed = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels)
    assert routed.returncode == 0, routed.stderr
    assert routed.stdout.split() == [receiver]


@pytest.fixture(scope="module")
def alertmanager_url() -> Iterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="credited-alertmanager-"))
    port = free_port()
    log = (workdir / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            tool("prometheus-alertmanager"),
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"--storage.path={workdir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/-/ready", process, "alertmanager")
        yield url
    finally:
        stop(process)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def alert(name: str, severity: str, **labels: str) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, "severity": severity, **labels},
        "annotations": {"summary": name},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
    }


def test_one_outage_pages_once_the_symptoms_it_causes_are_inhibited(alertmanager_url: str) -> None:
    firing = [
        alert("ServiceDown", "page", service="reconciler", job="reconciler"),
        alert("ReconcilerStalled", "page", service="reconciler"),
        alert("OrdersOverdue", "page", service="reconciler"),
        alert("CreditSLOBurnRate", "page", service="reconciler", slo_window="fast"),
        alert("CreditSLOBurnRate", "warning", service="reconciler", slo_window="slow"),
        alert("ChannelDelayRateHigh", "warning", service="reconciler", channel="card"),
        alert("OrdersEscalated", "page", service="reconciler", reason="refund_failed"),
        alert("RemediationFailing", "warning", service="reconciler", action="IssueRefund"),
        alert("ConsumerLagHigh", "warning", service="ledger", group="ledger.payments"),
    ]
    assert httpx.post(f"{alertmanager_url}/api/v2/alerts", json=firing, timeout=10).status_code == 200
    shown = httpx.get(f"{alertmanager_url}/api/v2/alerts", timeout=10).json()
    active = sorted(
        (a["labels"]["alertname"], a["labels"]["severity"]) for a in shown if a["status"]["state"] == "active"
    )
    assert active == [
        ("ConsumerLagHigh", "warning"),  # another service: not caused by the reconciler being down
        ("OrdersEscalated", "page"),
        ("RemediationFailing", "warning"),  # the refunds that failed, a ticket beside the escalation's page
        ("ServiceDown", "page"),
    ]


def test_a_critical_alert_pages_at_once_and_repeats_sooner_than_a_page() -> None:
    routes = {r["matchers"][0]: r for r in load_yaml(ALERTMANAGER_CONFIG)["route"]["routes"]}
    critical, page = routes['severity="critical"'], routes['severity="page"']
    assert critical["receiver"] == page["receiver"] == "pager"
    assert _seconds(critical["repeat_interval"]) < _seconds(page["repeat_interval"])
    assert _seconds(critical["group_wait"]) <= _seconds(page["group_wait"])


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]
