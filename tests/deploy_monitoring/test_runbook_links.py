"""Runbooks one click away: an alert's runbook_url is absolute, from the base URL Prometheus is given
(CREDITED_RUNBOOK_BASE_URL, through the external label runbook_base_url); each runbook is a Grafana
dashboard made from docs/runbooks; every panel an alert is about links its runbook."""

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from credited_dashboards.__main__ import OUT
from credited_dashboards.panels import runbook_path, runbook_uid
from prometheus_client import CollectorRegistry, start_http_server

from credited.stack.processes import free_port
from servicekit.metrics import DeadLetterKind, ServiceMetrics
from tests.deploy_monitoring.conftest import (
    PROMETHEUS_DIR,
    RULES_DIR,
    RUNBOOKS_DIR,
    alerts,
    stop,
    tool,
    wait_until_ready,
)

BASE = "https://grafana.example.test:3000"


def boards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in OUT.glob("*.json")}


@pytest.fixture
def ledger_metrics() -> Iterator[tuple[ServiceMetrics, int]]:
    """The ledger's credited_* metrics served on a loopback port, as the service serves them."""
    registry = CollectorRegistry()
    metrics = ServiceMetrics("ledger", registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield metrics, server.server_port
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def prometheus_scraping(ledger_metrics: tuple[ServiceMetrics, int]) -> Iterator[str]:
    """A real Prometheus with the committed prometheus.yml and rules, scraping the ledger every second,
    given the runbook base URL in its environment."""
    _, port = ledger_metrics
    workdir = Path(tempfile.mkdtemp(prefix="credited-runbooks-"))
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    config.pop("alerting")
    config["scrape_configs"] = [{"job_name": "ledger", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    listen = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{listen}",
            "--enable-feature=expand-external-labels",  # Prometheus 3 (compose) expands them by default
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "CREDITED_RUNBOOK_BASE_URL": BASE},
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{listen}/-/ready", process, "prometheus")
        yield f"http://127.0.0.1:{listen}"
    finally:
        stop(process)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def firing(prometheus_url: str, name: str) -> list[dict[str, Any]]:
    found = httpx.get(f"{prometheus_url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in found if a["labels"]["alertname"] == name and a["state"] == "firing"]


def wait_for(check: Any, what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        time.sleep(0.2)
    return result


def test_a_firing_alert_links_its_runbook_under_the_base_url_prometheus_is_given(
    ledger_metrics: tuple[ServiceMetrics, int], prometheus_scraping: str
) -> None:
    metrics, _ = ledger_metrics
    consumer = metrics.consumer("ledger.payments", ["payments.events"])

    def scraped() -> bool:
        query = {"query": 'credited_dead_letters_total{group="ledger.payments"}'}
        return bool(httpx.get(f"{prometheus_scraping}/api/v1/query", params=query, timeout=5).json()["data"]["result"])

    wait_for(scraped, "a first scrape of the ledger")
    consumer.dead_lettered(DeadLetterKind.REJECTED)
    (alert,) = wait_for(lambda: firing(prometheus_scraping, "DeadLetterGrowing"), "DeadLetterGrowing firing")
    assert alert["annotations"]["runbook_url"] == f"{BASE}/d/runbook-dead-letter-growing"


def test_every_alert_has_its_runbook_as_a_grafana_dashboard_made_from_docs_runbooks() -> None:
    made = boards()
    for name in {rule["alert"] for rule in alerts()}:
        board = made[runbook_uid(name)]
        (panel,) = board["panels"]
        assert panel["type"] == "text" and panel["options"]["mode"] == "markdown"
        assert panel["options"]["content"].startswith((RUNBOOKS_DIR / f"{name}.md").read_text().splitlines()[0])


def test_links_between_runbooks_lead_to_runbook_dashboards_that_exist() -> None:
    made = boards()
    for uid, board in made.items():
        if not uid.startswith("runbook-"):
            continue
        text = board["panels"][0]["options"]["content"]
        assert ".md)" not in text, f"{uid} links a markdown file Grafana does not serve"
        for target in [part.split(")")[0] for part in text.split("](/d/")[1:]]:
            assert target in made, f"{uid} links /d/{target}, which is no dashboard"


def test_every_alert_is_linked_from_a_panel_that_shows_it_and_every_link_leads_to_a_runbook() -> None:
    made = boards()
    linked: set[str] = set()
    for board in made.values():
        for panel in board["panels"]:
            for link in panel.get("links") or []:
                assert link["url"].startswith("/d/runbook-") and link["url"][3:] in made, link
                linked.add(link["url"])
    assert {runbook_path(rule["alert"]) for rule in alerts()} <= linked
