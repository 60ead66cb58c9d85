"""Every dashboard query parses in a real Prometheus, and the service kit's metrics follow the naming rules.
That every rule and query selects series the services really emit is test_rules_select_emitted_series.py."""

import httpx
import pytest
from prometheus_client import CollectorRegistry

from reconciler.adapters.metrics import PrometheusObservations
from servicekit.metrics import ServiceMetrics
from tests.deploy_monitoring.conftest import dashboard_queries, grafana_free


def test_the_service_kit_metrics_follow_the_naming_rules() -> None:
    registry = CollectorRegistry()
    ServiceMetrics("any", registry)
    for family in registry.collect():
        assert family.name.startswith("credited_")
        if family.type == "histogram":  # what it measures ends its name: durations _seconds, counts _records
            assert family.name.endswith(("_seconds", "_records")), family.name


def test_the_reconciler_metrics_follow_the_naming_rules_and_label_by_bounded_sets() -> None:
    registry = CollectorRegistry()
    PrometheusObservations(registry)
    for family in registry.collect():
        assert family.name.startswith("reconciler_"), family.name
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_records")), family.name
    names = {family.name for family in registry.collect() if family.type == "counter"}
    assert {"reconciler_remediations", "reconciler_escalations"} <= names  # counters, exposed with _total


@pytest.mark.parametrize("where_and_expr", list(dashboard_queries()), ids=lambda wq: wq[0])
def test_every_dashboard_query_parses_in_a_real_prometheus(
    prometheus_url: str, where_and_expr: tuple[str, str]
) -> None:
    _, expr = where_and_expr
    answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": grafana_free(expr)}, timeout=10)
    assert answer.status_code == 200, answer.json().get("error")
    assert answer.json()["status"] == "success"
