"""The chaos run's table: each fault injected and what it did, then what the checker found."""

from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


def fault_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"faults injected ({result['schedule']}, threshold {result['threshold_s']}s)")
    columns = ("at s", "fault", "for s", "outcome", "requests failed", "exited by themselves", "harmed", "sent twice")
    for column in columns:
        table.add_column(column)
    for row in result["faults"]:
        table.add_row(
            f"{row['at_s']:.0f}",
            row["fault"],
            f"{row['duration_s']:.0f}" if row["duration_s"] else "",
            row["outcome"],
            str(row["requests_failed"]),
            ", ".join(row["service_exits"]),
            str(row["harmed_orders_paid_near"]),
            str(row["delivered_twice_first_seen_in"]),
        )
        for why, n in row.get("requests_failed_why", {}).items():
            table.add_row("", "", "", f"  {n} x {why}", "", "", "", "")
    return table


def findings_table(result: dict[str, Any]) -> Table:
    table = Table(title="what the checker found (every count must be 0)")
    for column in ("check", "count", "examples"):
        table.add_column(column)
    for name, found in result["findings"].items():
        style = "red" if found["count"] else "green"
        table.add_row(name, f"[{style}]{found['count']}[/{style}]", " ".join(found["examples"][:3]))
    return table


def print_report(result: dict[str, Any], console: Console) -> None:
    console.print(fault_table(result))
    console.print(findings_table(result))
    facts = ("orders", "paid", "credited", "refunded", "told_delayed", "duplicate_deliveries", "dead_lettered_total")
    console.print("  ".join(f"{k}={result[k]}" for k in facts))
    console.print(f"requests failed={result['requests_failed']} given up={result['requests_given_up']}")
    console.print(f"restarts={result['restarts']} settle={result['settle_s']}s elapsed={result['elapsed_s']}s")
    for reason, n in result["dead_lettered"].items():
        console.print(f"  dead-lettered {n}: {reason}")
    for exit_ in result["service_exits"][:12]:
        console.print(f"  {exit_['service']} exited ({exit_['code']}) at {exit_['at_s']}s: {exit_['last_lines']}")
    console.print("[green]no finding[/green]" if result["ok"] else "[red]findings above[/red]")


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
