"""`credited order`: the order, its timeline in time order, cases and actions in the terminal; plain errors."""

from rich.console import Console
from typer.testing import CliRunner

from credited.cli import app
from credited.console.terminal import render
from credited.stack.processes import free_port
from tests.console.unit.fake_payments import ORDER, FakePayments, case


def test_the_terminal_view_shows_the_facts_the_timeline_in_time_order_cases_and_actions() -> None:
    fake = FakePayments()
    action = {"id": "a-1", "action": "resend_notification", "by": "support-alice", "reason": "user asked"}
    view = {
        "order": ORDER,
        "timeline": fake.timeline,
        "cases": [case("c-1", "page", "2026-11-22T08:00:10+00:00", owner="alice")],
        "actions": [{**action, "at": "2026-11-22T09:00:00+00:00", "outcome": "requested"}],
        "unavailable": [{"source": "notifier", "error": "connection refused"}],
    }
    console = Console(record=True, width=200)
    render(view, console)
    text = console.export_text()
    assert "CN¥648.00 (64800 minor units)" in text
    assert text.index("order_created") < text.index("credit_rejected") < text.index("escalated")
    assert "notifier unreachable: connection refused" in text
    assert "c-1" in text and "alice" in text and "resend_notification" in text and "support-alice" in text


def test_the_order_command_without_a_key_or_with_payments_away_says_so_and_fails() -> None:
    runner = CliRunner()
    no_key = runner.invoke(app, ["order", "ord_1"], env={"CREDITED_API_KEY": ""})
    assert no_key.exit_code == 1 and "no API key" in no_key.output
    pasted_prefix = runner.invoke(app, ["order", "ord_1"], env={"CREDITED_API_KEY": "ck_live_Ab3dE9\u2026"})
    assert pasted_prefix.exit_code == 1 and "not an API key" in pasted_prefix.output, pasted_prefix.output
    away = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["order", "ord_1", "--key", "sk_x", "--payments-url", away])
    assert result.exit_code == 2
    assert f"payments at {away} cannot be reached" in result.output
    assert "Traceback" not in result.output


def test_text_from_payments_with_square_brackets_is_printed_as_written_not_read_as_rich_markup() -> None:
    """Reasons, notes, owners and summaries are typed by staff, a transaction id is the provider's: rich reads a str as
    markup, so "[/]" stopped the command for that order for good and "[link=...]" printed a hidden link under other
    words."""
    link = "[link=https://evil.example/refund]call the hotline[/link]"
    fake = FakePayments()
    resolved = case("c-1", "page", "2026-11-22T08:00:10+00:00", owner="[bold]alice[/]", resolution=link)
    view = {
        "order": {**ORDER, "provider_txn_id": "tx-[/]-9"},
        "timeline": [{**fake.timeline[0], "summary": "refund: user said [/] twice"}],
        "cases": [{**resolved, "resolved_at": "2026-11-22T09:00:00+00:00"}],
        "actions": [
            {"at": "2026-11-22T09:00:00+00:00", "action": "refund", "by": "support-alice", "reason": "a [/red] b"}
        ],
        "unavailable": [{"source": "notifier", "error": "proxy said [/x]"}],
    }
    console = Console(record=True, width=300)
    render(view, console)
    text = console.export_text(clear=False)
    for written in ("tx-[/]-9", "refund: user said [/] twice", "[bold]alice[/]", link, "a [/red] b", "proxy said [/x]"):
        assert written in text, (written, text)
    assert "<a href=" not in console.export_html(inline_styles=True)
