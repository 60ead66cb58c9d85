"""Small builders on top of grafana-foundation-sdk: one Prometheus datasource, queries, and the panel
kinds the dashboards use, with units and thresholds in one place."""

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode, StackingMode
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, Threshold, ThresholdsMode

DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
"""The datasource provisioned in provisioning/datasources/prometheus.yml (same uid)."""

GREEN, YELLOW, RED = "green", "yellow", "red"


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
) -> timeseries.Panel:
    """A time series panel; `steps` draw threshold lines (an objective or an alert's limit)."""
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
    return panel


def single(
    title: str, unit: str, expr: str, *, description: str = "", steps: tuple[tuple[float, str], ...] = ()
) -> stat.Panel:
    """One number, colored by its thresholds."""
    return (
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
