"""Every label matcher of every alert rule, recording rule and dashboard query selects a series the
services really emitted while they went through the situations the alerts are about (emitted/scenarios.py),
and every label they group or match by is on those series. A rule that selects a label value no code
emits can never fire, however well its promtool tests pass on input written by hand."""

from functools import cache
from typing import Any

import pytest

from tests.deploy_monitoring.conftest import dashboard_queries, grafana_free, rules
from tests.deploy_monitoring.emitted.scenarios import SCENARIOS, timeline
from tests.deploy_monitoring.emitted.scrape import Labels
from tests.deploy_monitoring.emitted.selectors import problems


@cache
def emitted() -> frozenset[Labels]:
    """Every series any scenario's scrapes held at some step."""
    return frozenset(labels for name in SCENARIOS for labels in timeline(name).series())


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def rule_id(rule: dict[str, Any]) -> str:
    return str(rule.get("alert") or rule["record"])


@pytest.mark.parametrize("rule", rules(), ids=rule_id)
def test_every_selector_of_the_rule_selects_series_the_services_emit(rule: dict[str, Any]) -> None:
    found = problems(rule["expr"], emitted(), recorded())
    assert not found, "\n".join(found)


@pytest.mark.parametrize("where_and_expr", list(dashboard_queries()), ids=lambda wq: wq[0])
def test_every_selector_of_the_dashboard_query_selects_series_the_services_emit(
    where_and_expr: tuple[str, str],
) -> None:
    _, expr = where_and_expr
    found = problems(grafana_free(expr), emitted(), recorded())
    assert not found, "\n".join(found)


def test_the_check_names_a_label_value_no_service_emits_even_beside_one_that_is_emitted() -> None:
    series = [(("__name__", "deliveries_total"), ("channel", "webhook"), ("outcome", "failed"))]
    expr = 'sum by (channel) (rate(deliveries_total{outcome=~"failed|dead_lettered"}[5m]))'
    assert problems(expr, series, set()) == ['deliveries_total{outcome="dead_lettered"} selects no emitted series']
    assert problems('sum by (kind) (deliveries_total{outcome="failed"})', series, set()) == [
        "deliveries_total{outcome=\"failed\"} has no label ['kind'] to group or match by"
    ]
    assert problems('deliveries_total{outcome!~"retried|gone", channel="webhook"}', series, set()) == []
