"""Every metric a rule or a dashboard uses is one the services expose, and every query parses in a real
Prometheus."""

import re
from collections.abc import Iterator

import httpx
import promql_parser
import pytest
from credited_dashboards.__main__ import ALL
from prometheus_client import CollectorRegistry

from payments.adapters.metrics import PrometheusPaymentsMetrics
from reconciler.adapters.metrics import PrometheusObservations
from servicekit.metrics import ServiceMetrics
from tests.deploy_monitoring.conftest import rules

# What the ledger and notifier expose themselves. Their owners implement exactly these names (issue 6:
# "On-call: metrics, alerts, dashboards and runbooks"); rules and dashboards may use these and nothing
# else of theirs. The credited_* metrics they get from the service kit, and the payments and
# reconciler metrics, are read from their own registries below.
IMPLEMENTED_BY_THEIR_OWNERS = {
    "ledger_credits_posted_total",
    "ledger_credits_rejected_total",
    "notifier_deliveries_total",
}
HISTOGRAMS_BY_THEIR_OWNERS = {"notifier_delivery_latency_seconds"}
PROMETHEUS_OWN = {"up"}


def family_names(registry: CollectorRegistry) -> set[str]:
    """The sample names each metric family on `registry` exposes, whether or not it has a child yet."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


def exposed() -> set[str]:
    registry = CollectorRegistry()
    ServiceMetrics("any", registry)
    PrometheusPaymentsMetrics(registry, channels=["alipay"], providers=["sim"])
    PrometheusObservations(registry)
    histograms = {name + suffix for name in HISTOGRAMS_BY_THEIR_OWNERS for suffix in ("_bucket", "_count", "_sum")}
    return family_names(registry) | IMPLEMENTED_BY_THEIR_OWNERS | histograms | PROMETHEUS_OWN


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(dashboard title / panel title, PromQL) of every panel target and query variable."""
    for build in ALL:
        board = build().build()
        for panel in board.panels or []:
            for target in getattr(panel, "targets", None) or []:
                yield f"{board.title} / {panel.title}", target.expr
        for variable in board.templating.list_val or []:
            match = re.fullmatch(r"label_values\((\w+), *\w+\)", str(variable.query))
            assert match, f"{board.title}: variable query {variable.query!r} is not label_values(metric, label)"
            yield f"{board.title} / ${variable.name}", match.group(1)


def grafana_free(expr: str) -> str:
    """The query as Grafana sends it, with its variables filled in."""
    return expr.replace("$__rate_interval", "1m").replace("$channel", ".*")


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            by_name = [m.value for m in node.matchers.matchers if m.name == "__name__"]
            names.update([node.name] if node.name else by_name)
        return True

    promql_parser.walk(promql_parser.parse(grafana_free(expr)), visit)
    return names


def test_the_name_extraction_sees_every_selector_in_an_expression() -> None:
    expr = 'sum(rate(a_total{x="1"}[5m])) / on () b or absent(c{j="k"}) and {__name__="d"} > bool 1'
    assert metric_names(expr) == {"a_total", "b", "c", "d"}


def test_every_metric_in_the_alert_and_recording_rules_is_exposed_or_recorded() -> None:
    known = exposed() | recorded()
    used = {rule.get("alert") or rule["record"]: metric_names(rule["expr"]) for rule in rules()}
    unknown = {name: sorted(metrics - known) for name, metrics in used.items() if metrics - known}
    assert unknown == {}


def test_every_metric_on_the_dashboards_is_exposed_or_recorded() -> None:
    known = exposed() | recorded()
    unknown: dict[str, set[str]] = {}
    for where, expr in dashboard_queries():  # a panel with several queries yields each under its title
        unknown.setdefault(where, set()).update(metric_names(expr) - known)
    assert {where: sorted(names) for where, names in unknown.items() if names} == {}


def test_the_service_kit_metrics_follow_the_naming_rules() -> None:
    registry = CollectorRegistry()
    ServiceMetrics("any", registry)
    for family in registry.collect():
        assert family.name.startswith("credited_")
        if family.type == "histogram":
            assert family.name.endswith("_seconds")


@pytest.mark.parametrize("where_and_expr", list(dashboard_queries()), ids=lambda wq: wq[0])
def test_every_dashboard_query_parses_in_a_real_prometheus(
    prometheus_url: str, where_and_expr: tuple[str, str]
) -> None:
    _, expr = where_and_expr
    answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": grafana_free(expr)}, timeout=10)
    assert answer.status_code == 200, answer.json().get("error")
    assert answer.json()["status"] == "success"
