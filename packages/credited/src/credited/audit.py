"""`credited audit --since 2h`: run payments' money audit now and print what it found and re-drove.

It asks payments (`POST /v1/audits`, a key with `audit:run`): payments reads its paid orders and refunds and
the ledger's credits for the window, re-announces the payment of each paid order never credited, and answers.
Exit status: 0 when nothing is wrong, 1 when the audit found something, 2 when it could not run.
"""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from credited.dlq import parse_time
from credited.keys import DEVELOPMENT_KEY_NAME, development_keys

DEV_KEYS = Path(".credited") / "dev-keys.json"


def _key(given: str | None) -> str:
    if given:
        return given
    if DEV_KEYS.exists():
        return development_keys(DEV_KEYS).get(DEVELOPMENT_KEY_NAME, "")
    raise typer.BadParameter("give --key (or CREDITED_API_KEY): an API key with audit:run", param_hint="--key")


def audit(
    since: Annotated[str, typer.Option(help="Audit orders paid at or after: 30m, 2h, 7d ago, or ISO 8601 with zone.")],
    until: Annotated[str | None, typer.Option(help="Paid before (same forms); default now.")] = None,
    url: Annotated[str, typer.Option(envvar="CREDITED_PAYMENTS_URL", help="payments' base URL.")] = (
        "http://127.0.0.1:8101"
    ),
    key: Annotated[
        str | None,
        typer.Option(
            envvar="CREDITED_API_KEY",
            help="API key with audit:run; default the local stack's dev key. Prefer CREDITED_API_KEY outside a dev"
            " machine: a --key value shows in the process list (ps) to every user of the host.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print payments' answer as one JSON object.")] = False,
) -> None:
    """Run the money audit now: paid orders against the ledger's credits and payments' refunds; every paid order
    never credited nor refunded gets its payment announced again."""
    now = datetime.now(UTC)
    body: dict[str, str] = {"since": _iso(parse_time(since, now))}
    if until is not None:
        body["until"] = _iso(parse_time(until, now))
    headers = {"Authorization": f"Bearer {_key(key)}"}
    import httpx  # here, not at the top: every `credited` command would load it to start

    try:
        answer = httpx.post(f"{url.rstrip('/')}/v1/audits", json=body, headers=headers, timeout=600)
    except httpx.HTTPError as exc:
        typer.echo(f"payments at {url} did not answer: {exc!r}", err=True)
        raise typer.Exit(2) from None
    if answer.status_code != 200:
        typer.echo(f"payments answered {answer.status_code}: {answer.text}", err=True)
        raise typer.Exit(2)
    result: dict[str, Any] = answer.json()
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
    else:
        print_result(result, Console(width=200))
    raise typer.Exit(1 if any(result["counts"].values()) else 0)


def _iso(when: datetime | None) -> str:
    assert when is not None
    return when.isoformat()


def print_result(result: dict[str, Any], console: Console) -> None:
    """Mismatches by kind, then each finding with whether its payment was announced again, then the orders not
    judged (in grace, refund in flight) and the money looked at."""
    console.print(f"money audit of orders paid {result['since']} .. {result['until']}")
    kinds = Table("mismatch", "orders")
    for kind, n in result["counts"].items():
        kinds.add_row(kind, str(n))
    console.print(kinds)
    redriven = set(result["redriven"])
    if result["findings"]:
        found = Table("order", "mismatch", "detail", "re-driven")
        for f in result["findings"]:
            found.add_row(f["order_id"], f["kind"], f["detail"], "yes" if f["order_id"] in redriven else "")
        console.print(found)
    money = ", ".join(f"{what} {_amounts(result[what])}" for what in ("paid", "credited", "refunded") if result[what])
    console.print(
        f"{sum(result['counts'].values())} found, {len(redriven)} re-driven, {result['in_grace']} in grace, "
        f"{result['refunds_in_flight']} with a refund in flight (not judged until the provider finishes it)"
        + (f"; {money}" if money else "")
    )


def _amounts(by_currency: dict[str, int]) -> str:
    """The audit answers minor units: shown in each currency's major unit (64800 CNY as CN¥648.00, 500 JPY as ¥500),
    one figure per currency, never summed across them."""
    from babel import Locale

    from servicekit.money import format_minor

    english = Locale.parse("en")
    return " + ".join(format_minor(n, currency, english) for currency, n in sorted(by_currency.items()))
