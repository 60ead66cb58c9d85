"""The alert rules: valid, loaded by a real Prometheus, each one unit-tested both ways on the series the
services' own code emits, each with a severity, words for people and a runbook one click away."""

import subprocess
from pathlib import Path
from typing import Any

import httpx
from credited_dashboards.panels import runbook_path

from credited.stack.local import DEFAULT_PORTS
from servicekit.settings import default_metrics_port
from tests.deploy_monitoring.conftest import (
    PROMETHEUS_DIR,
    ROOT,
    RULE_TESTS_DIR,
    alerts,
    load_yaml,
    rule_files,
    rules,
    tool,
)
from tests.deploy_monitoring.emitted.promtool import write_rule_tests

REQUIRED_ALERTS = {
    "OrdersOverdue",
    "RemediationFailing",
    "OrdersEscalated",
    "ReconcilerStalled",
    "ConsumerLagHigh",
    "OutboxBacklog",
    "ChannelDelayRateHigh",
    "NotificationDeliveryFailing",
    "DeadLetterGrowing",
    "CreditSLOBurnRate",
    "CreditWithoutPayment",
    "CommandsWithoutPayment",
    "MoneyAuditMismatch",
    "MoneyAuditStale",
    "SupportCaseOpen",
    "SupportCaseUnacknowledged",
    "SupportCaseWarning",
}
RUNBOOK_BASE = "{{ $externalLabels.runbook_base_url }}"
SEVERITIES = {"critical", "page", "warning"}
SERVICES = {name: default_metrics_port(port) for name, port in DEFAULT_PORTS.items()}
"""Where Prometheus scrapes each service: its metrics port (9101-9104), never its public port."""


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)


def test_the_rule_files_and_both_prometheus_configs_are_valid_for_promtool() -> None:
    promtool = tool("promtool")
    checked = run(promtool, "check", "rules", *map(str, rule_files()))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for config in ("prometheus.yml", "prometheus.compose.yml"):
        checked = run(promtool, "check", "config", str(PROMETHEUS_DIR / config))
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_fires_and_stays_quiet_exactly_as_its_promtool_unit_tests_say(tmp_path: Path) -> None:
    templates = sorted(RULE_TESTS_DIR.glob("*.test.yml"))
    assert templates
    tests = write_rule_tests(templates, tmp_path)  # each case's input: its scenario's scrapes
    result = run(tool("promtool"), "test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_promtool_case_takes_its_input_from_a_scenario_not_from_series_written_by_hand() -> None:
    for path in RULE_TESTS_DIR.glob("*.test.yml"):
        for case in load_yaml(path)["tests"]:
            assert "scenario" in case and "input_series" not in case, f"{path.name}: {case['name']}"


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS_DIR.glob("*.test.yml"):
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts never shown firing in a promtool test"
    assert names - quiet == set(), "alerts never shown staying quiet in a promtool test"


def test_the_alerts_on_call_relies_on_all_exist() -> None:
    assert {rule["alert"] for rule in alerts()} >= REQUIRED_ALERTS


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_that_exists() -> None:
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations: dict[str, Any] = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert annotations["runbook_url"] == RUNBOOK_BASE + runbook_path(name), name
        assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file(), f"docs/runbooks/{name}.md is missing"


def test_a_real_prometheus_loads_every_rule_and_finds_it_healthy(prometheus_url: str) -> None:
    groups = httpx.get(f"{prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert len(loaded) == len(rules())
    assert {rule["health"] for rule in loaded} <= {"ok", "unknown"}


def test_both_prometheus_configs_scrape_the_four_services_metrics_ports_each_under_its_own_job() -> None:
    local = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    jobs = {job["job_name"]: job for job in local["scrape_configs"]}
    assert {name: jobs[name]["static_configs"][0]["targets"] for name in SERVICES} == {
        name: [f"127.0.0.1:{port}"] + (["127.0.0.1:9113"] if name == "reconciler" else [])  # `credited up`'s 2nd
        for name, port in SERVICES.items()
    }
    compose = load_yaml(PROMETHEUS_DIR / "prometheus.compose.yml")
    jobs = {job["job_name"]: job for job in compose["scrape_configs"]}
    for name, port in SERVICES.items():
        (discovery,) = jobs[name]["dns_sd_configs"]
        assert discovery["names"][0] == name and discovery["port"] == port
    for config in (local, compose):
        assert config["rule_files"] == ["rules/*.yml"]
        assert config["global"]["external_labels"]["runbook_base_url"] == "${CREDITED_RUNBOOK_BASE_URL}"


def test_every_runbook_says_what_it_means_which_orders_how_to_read_them_what_to_do_and_how_to_verify() -> None:
    sections = [
        "## What it means",
        "## Find the affected orders",
        "## Read an order's timeline",
        "## What to do by hand",
        "## Verify it worked",
    ]
    for name in {rule["alert"] for rule in alerts()}:
        text = (ROOT / "docs" / "runbooks" / f"{name}.md").read_text()
        positions = [text.find(section) for section in sections]
        assert -1 not in positions and positions == sorted(positions), name
