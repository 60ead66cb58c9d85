"""A real Prometheus and Alertmanager around a running stack, from the committed configuration with timings of
seconds, and the webhook receiver Alertmanager delivers to: what the alert end-to-end tests share."""

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from credited.stack.local import LocalStack
from credited.stack.processes import free_port
from tests.deploy_monitoring.conftest import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_DIR,
    RULES_DIR,
    load_yaml,
    stop,
    tool,
    wait_until_ready,
)

RUNBOOK_BASE_URL = "http://grafana.on-call.test:3000"


@dataclass
class Notification:
    path: str
    received_at: float
    body: dict[str, Any]


@dataclass
class AlertWebhook:
    """Alertmanager's webhook receiver: keeps every notification with the time it arrived."""

    port: int = field(default_factory=free_port)
    received: list[Notification] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def first(self, alertname: str, status: str) -> Notification | None:
        for note in self.received:
            if any(a["labels"]["alertname"] == alertname and a["status"] == status for a in note.body["alerts"]):
                return note
        return None

    @contextmanager
    def serving(self) -> Iterator["AlertWebhook"]:
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                webhook.received.append(Notification(self.path, time.time(), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


def prometheus_config(stack: LocalStack, alertmanager_port: int) -> dict[str, Any]:
    """The committed prometheus.yml, pointed at this stack's metrics ports, with 1 s scrapes and evaluations."""
    config: dict[str, Any] = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES_DIR / "*.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{alertmanager_port}"]
    for job in config["scrape_configs"]:
        job["static_configs"][0]["targets"] = [f"127.0.0.1:{stack.metrics_ports[job['job_name']]}"]
    return config


def alertmanager_config(webhook: AlertWebhook) -> dict[str, Any]:
    """The committed alertmanager.yml, delivering to `webhook`, with group timings of seconds."""
    config: dict[str, Any] = load_yaml(ALERTMANAGER_CONFIG)
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = webhook.url + httpx.URL(hook["url"]).path
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="2s")
    return config


@contextmanager
def monitoring(stack: LocalStack, workdir: Path, webhook: AlertWebhook) -> Iterator[str]:
    """Alertmanager and Prometheus on loopback ports; yields Prometheus's URL."""
    am_port, prom_port = free_port(), free_port()
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(webhook)))
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(stack, am_port)))
    logs = [(workdir / "alertmanager.log").open("wb"), (workdir / "prometheus.log").open("wb")]
    alertmanager = subprocess.Popen(
        [
            tool("prometheus-alertmanager"),
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        stdout=logs[0],
        stderr=subprocess.STDOUT,
    )
    prometheus = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--enable-feature=expand-external-labels",  # Prometheus 3 (compose) expands them by default
        ],
        stdout=logs[1],
        stderr=subprocess.STDOUT,
        env={**os.environ, "CREDITED_RUNBOOK_BASE_URL": RUNBOOK_BASE_URL},
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{am_port}/-/ready", alertmanager, "alertmanager")
        wait_until_ready(f"http://127.0.0.1:{prom_port}/-/ready", prometheus, "prometheus")
        yield f"http://127.0.0.1:{prom_port}"
    finally:
        stop(prometheus)
        stop(alertmanager)
        for log in logs:
            log.close()
