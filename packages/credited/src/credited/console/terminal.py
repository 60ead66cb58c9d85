"""`credited order <id>`: an order, its timeline across the services, its cases and past actions in a terminal
(rich), or as one JSON object (`--json`) for scripts. The key is the engineer's own (support:read)."""

import asyncio
import sys
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from credited.console.api import ApiRefused, ApiUnreachable, SupportApi, payments_url_from_environment
from credited.console.i18n import Words
from credited.console.ordering import sort_cases, sort_timeline

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2
HINTS = {
    401: "the API key was refused (unknown, revoked or expired): pass --key or set CREDITED_API_KEY",
    403: "the API key lacks the scope support:read (`credited keys create --scope support:read ...`)",
    404: "payments knows no such order",
}
SOURCE_STYLES = {
    "payments": "blue",
    "ledger": "green",
    "reconciler": "yellow",
    "notifier": "magenta",
    "support": "red",
}


def _plain(value: object) -> Text:
    """`value` as the words it is: rich reads a str as markup, and a reason, note or transaction id quoting "[/]"
    stopped the command for that order, or one holding "[link=...]" printed a link hidden under other words."""
    return Text("" if value is None else str(value))


def render(view: dict[str, Any], console: Console) -> None:
    """The order's facts, then its timeline in time order, its cases and its actions."""
    t = Words("en")
    order = view.get("order", {})
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    for label, value in (
        ("order", order.get("order_id")),
        ("user", order.get("user_id")),
        ("amount", f"{t.money(order.get('amount'), order.get('currency'))} ({order.get('amount')} minor units)"),
        ("status", order.get("status")),
        ("payment", order.get("payment_status")),
        ("channel", f"{order.get('channel')} via {order.get('provider')}"),
        ("provider txn", order.get("provider_txn_id") or "-"),
        ("created", t.time(order.get("created_at"))),
        ("paid", t.time(order.get("paid_at")) or "-"),
    ):
        facts.add_row(label, Text(str(value)))
    console.print(facts)
    for missing in view.get("unavailable", []):
        line = Text.assemble((f"{missing.get('source')} unreachable", "red"), f": {missing.get('error')}")
        console.print(line, soft_wrap=True)

    timeline = Table(title="timeline", title_justify="left", expand=False)
    for column in ("at (UTC)", "source", "kind", "summary"):
        timeline.add_column(column)
    for entry in sort_timeline(view.get("timeline", [])):
        source = str(entry.get("source"))
        style = SOURCE_STYLES.get(source, "white")
        timeline.add_row(
            Text(str(entry.get("at"))),
            Text(source, style=style),
            _plain(entry.get("kind")),
            _plain(entry.get("summary")),
        )
    console.print(timeline)

    cases = Table(title="cases", title_justify="left")
    for column in ("id", "severity", "kind", "opened", "owner", "state", "reason"):
        cases.add_column(column)
    for case in sort_cases(view.get("cases", [])):
        state = "resolved" if case.get("resolved_at") else "acknowledged" if case.get("acknowledged_at") else "open"
        cases.add_row(
            Text(str(case.get("id"))),
            _plain(case.get("severity")),
            _plain(case.get("kind")),
            Text(str(case.get("opened_at"))),
            _plain(case.get("owner") or "-"),
            state,
            _plain(case.get("resolution") or case.get("reason")),
        )
    console.print(cases if view.get("cases") else "cases: none")

    actions = Table(title="actions", title_justify="left")
    for column in ("at (UTC)", "action", "by", "reason", "outcome"):
        actions.add_column(column)
    for action in view.get("actions", []):
        actions.add_row(
            Text(str(action.get("at"))), *(_plain(action.get(field)) for field in ("action", "by", "reason", "outcome"))
        )
    console.print(actions if view.get("actions") else "actions: none")


async def fetch(payments_url: str, key: str, order_id: str) -> dict[str, Any]:
    async with SupportApi(payments_url, key) as client:
        return await client.order(order_id)


def order(
    order_id: Annotated[str, typer.Argument(help="The order id.")],
    key: Annotated[
        str,
        typer.Option(
            envvar="CREDITED_API_KEY", help="An API key with support:read (CREDITED_API_KEY).", show_default=False
        ),
    ] = "",
    payments_url: Annotated[
        str | None, typer.Option(help="Payments' public URL (CREDITED_PAYMENTS_URL; default the local stack's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's answer as one JSON object.")] = False,
) -> None:
    """Show an order as support sees it: facts, the timeline across the services, cases and actions."""
    err = Console(stderr=True)
    if not key:
        err.print("no API key: pass --key or set CREDITED_API_KEY (a key with support:read)", soft_wrap=True)
        raise typer.Exit(EXIT_REFUSED)
    if not key.isascii():  # a pasted `credited keys list` prefix ends in "…"; no key has such a character
        err.print("that is not an API key (it has characters no key has): pass the whole key", soft_wrap=True)
        raise typer.Exit(EXIT_REFUSED)
    url = payments_url or payments_url_from_environment()
    try:
        view = asyncio.run(fetch(url, key, order_id))
    except ApiRefused as exc:
        hint = HINTS.get(exc.status, "")
        said = f" {exc.status} {exc.code}: {exc.detail}" + (f"\n{hint}" if hint else "")
        err.print(Text.assemble(("refused", "red"), said), soft_wrap=True)  # the detail may quote an id as typed
        raise typer.Exit(EXIT_REFUSED) from None
    except ApiUnreachable as exc:
        said = f": {exc} (is the stack up? --payments-url or CREDITED_PAYMENTS_URL)"
        err.print(Text.assemble(("unreachable", "red"), said), soft_wrap=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None
    if as_json:
        sys.stdout.write(orjson.dumps(view).decode() + "\n")
    else:
        render(view, Console())
