"""The order in which the console's pages and `credited order` show what payments' support API returns.
Kept apart from the console's web app so the terminal command loads no web framework."""

from typing import Any

SEVERITY_ORDER = {"critical": 0, "page": 1, "warning": 2}


def sort_cases(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """By severity (critical, page, warning), then the oldest first, as the queue is worked."""
    return sorted(cases, key=lambda c: (SEVERITY_ORDER.get(c.get("severity", ""), 9), str(c.get("opened_at", ""))))


def sort_timeline(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """In time order (the API's order when times are equal)."""
    return sorted(entries, key=lambda e: str(e.get("at", "")))
