"""Shared pieces of the monitoring tests: the repository's rule files, the Debian tools (promtool,
amtool, prometheus, prometheus-alertmanager) and a real Prometheus with an empty TSDB on loopback."""

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from credited.stack.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = Path(__file__).resolve().parent / "rules"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOKS_DIR = ROOT / "docs" / "runbooks"

# The dashboards' code lives with the deployment files, not in a package of the project.
sys.path.insert(0, str(ROOT / "deploy" / "grafana"))


def tool(name: str) -> str:
    """The path of a Debian monitoring tool, or a failure that says how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not installed. It comes from Debian's packages: "
            "`apt-get install -y prometheus prometheus-alertmanager` (.ci/run installs them).",
            pytrace=False,
        )
    return path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def rules() -> list[dict[str, Any]]:
    """Every rule (alerting and recording) of every rule file."""
    return [rule for path in rule_files() for group in load_yaml(path)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(dashboard title / panel title, PromQL) of every panel target and query variable (as the query that
    groups its metric by its label)."""
    from credited_dashboards.__main__ import ALL

    for build in ALL:
        board = build().build()
        for panel in board.panels or []:
            for target in getattr(panel, "targets", None) or []:
                yield f"{board.title} / {panel.title}", target.expr
        for variable in board.templating.list_val or []:
            if variable.type_val.value != "query":
                continue
            match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", str(variable.query))
            assert match, f"{board.title}: variable query {variable.query!r} is not label_values(metric, label)"
            # The values of a label on a metric: what `sum by (label) (metric)` groups by.
            yield f"{board.title} / ${variable.name}", f"sum by ({match.group(2)}) ({match.group(1)})"


def grafana_free(expr: str) -> str:
    """The query as Grafana sends it, with its variables filled in."""
    return expr.replace("$__rate_interval", "1m").replace("$channel", ".*")


def wait_until_ready(url: str, process: subprocess.Popen[bytes], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready at {url} after {timeout_s} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def prometheus_url() -> Iterator[str]:
    """A real Prometheus on a loopback port with an empty TSDB, loaded with the repository's rules:
    its query API is the PromQL parser (a query that does not parse is answered 400 bad_data)."""
    binary = tool("prometheus")
    workdir = Path(tempfile.mkdtemp(prefix="credited-prometheus-"))
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump({"global": {"evaluation_interval": "1m"}, "rule_files": [str(RULES_DIR / "*.yml")]})
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/-/ready", process, "prometheus")
        yield url
    finally:
        stop(process)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
