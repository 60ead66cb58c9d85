"""The runbooks in Grafana: each docs/runbooks/<Alert>.md as a dashboard of one markdown panel, so an alert's
runbook_url (Grafana's address + /d/<uid>) and a panel's link open it in one click wherever Grafana runs,
with nothing else to host. docs/runbooks stays the source; `make dashboards` copies it here."""

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, text
from grafana_foundation_sdk.models.text import TextMode

from credited_dashboards.panels import board, runbook_path, runbook_uid

RUNBOOKS = Path(__file__).resolve().parents[3] / "docs" / "runbooks"
_LINK_TO_RUNBOOK = re.compile(r"\]\((\w+)\.md\)")


def alerts() -> list[str]:
    return sorted(p.stem for p in RUNBOOKS.glob("*.md") if p.stem != "README")


def runbook(alert: str) -> dashboard.Dashboard:
    """The runbook's text, its links to other runbooks pointed at their dashboards."""
    markdown = _LINK_TO_RUNBOOK.sub(lambda m: f"]({runbook_path(m.group(1))})", (RUNBOOKS / f"{alert}.md").read_text())
    return (
        board(
            runbook_uid(alert), f"Runbook: {alert}", f"docs/runbooks/{alert}.md, what on-call does when {alert} fires."
        )
        .tags(["credited", "runbook"])
        .refresh("")
        .with_panel(text.Panel().title(alert).mode(TextMode.MARKDOWN).content(markdown).span(24).height(60))
    )


def runbooks() -> list[Callable[[], dashboard.Dashboard]]:
    return [partial(runbook, alert) for alert in alerts()]
