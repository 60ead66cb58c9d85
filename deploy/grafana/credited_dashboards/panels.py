"""Small builders on top of grafana-foundation-sdk: one Prometheus datasource, queries, and the panel
kinds the dashboards use, with units and thresholds in one place."""

import re

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode, StackingMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
)

DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
"""The datasource provisioned in provisioning/datasources/prometheus.yml (same uid)."""

GREEN, YELLOW, RED = "green", "yellow", "red"


def runbook_uid(alert: str) -> str:
    """The uid of the alert's runbook dashboard (runbooks.py): `runbook-` and the alert's name in kebab case."""
    return "runbook-" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", alert).lower()


def runbook_path(alert: str) -> str:
    """Where Grafana serves the alert's runbook, from its root; the alert's runbook_url is the base URL + this."""
    return f"/d/{runbook_uid(alert)}"


def runbook_links(*alerts: str) -> list[dashboard.DashboardLink]:
    """Panel links to the runbooks of the alerts the panel is about."""
    return [
        dashboard.DashboardLink(f"Runbook: {alert}")
        .type(DashboardLinkType.LINK)
        .url(runbook_path(alert))
        .tooltip(f"What {alert} means and what to do")
        .target_blank(True)
        for alert in alerts
    ]


def query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DATASOURCE)


def _queries(exprs: list[tuple[str, str]]) -> list[prometheus.Dataquery]:
    return [query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(exprs)]


def thresholds(*steps: tuple[float, str]) -> dashboard.ThresholdsConfig:
    """Green below the first step; each step's color from its value up."""
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=None, color=GREEN), *(Threshold(value=v, color=c) for v, c in steps)])
    )


def graph(
    title: str,
    unit: str,
    *exprs: tuple[str, str],
    description: str = "",
    width: int = 12,
    steps: tuple[tuple[float, str], ...] = (),
    stacked: bool = False,
    alerts: tuple[str, ...] = (),
) -> timeseries.Panel:
    """A time series panel; `steps` draw threshold lines (an objective or an alert's limit); `alerts` are
    the alerts it shows, whose runbooks it links."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(_queries(list(exprs))))
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
        .fill_opacity(10)
    )
    if steps:
        panel = panel.thresholds(thresholds(*steps)).thresholds_style(
            common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)
        )
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(StackingMode.NORMAL))
    if alerts:
        panel = panel.links(runbook_links(*alerts))
    return panel


def single(
    title: str,
    unit: str,
    expr: str,
    *,
    description: str = "",
    steps: tuple[tuple[float, str], ...] = (),
    alerts: tuple[str, ...] = (),
) -> stat.Panel:
    """One number, colored by its thresholds; `alerts` as for graph()."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr))
        .unit(unit)
        .span(4)
        .height(4)
        .thresholds(thresholds(*steps))
    )
    return panel.links(runbook_links(*alerts)) if alerts else panel


RATE = "$__rate_interval"
SLO_OBJECTIVE = 0.001  # 99.9% of paid orders credited within the threshold
PAGE_BURN = 14.4 * SLO_OBJECTIVE


def board(uid: str, title: str, description: str) -> dashboard.Dashboard:
    """A dashboard with the settings every credited dashboard shares."""
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["credited"])
        .timezone("utc")
        .time("now-3h", "now")
        .refresh("30s")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .editable()
    )


def quantile(quantile: float, metric: str, by: str = "", selector: str = "") -> str:
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({quantile}, sum by ({group}) (rate({metric}_bucket{selector}[{RATE}])))"
