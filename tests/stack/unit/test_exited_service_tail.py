"""`credited up` prints a service that exited with the end of its log as written: through rich markup, a log line
lost its [level] and [logger], and a tail holding "[/...]" stopped the command just as a service died."""

from rich.console import Console

from credited.cli import exited

TAIL = (
    "2026-12-07T05:13:00Z [warning  ] Heartbeat failed [aiokafka.consumer.group_coordinator] service=ledger\n"
    "TypeError: list[/] is not a type"
)


def test_an_exited_services_log_tail_is_printed_with_every_bracket_it_holds() -> None:
    console = Console(record=True, width=200)
    console.print(exited("ledger", TAIL))
    printed = console.export_text()
    assert printed.startswith("ledger exited:\n")
    assert "[warning  ] Heartbeat failed [aiokafka.consumer.group_coordinator]" in printed, printed
    assert "list[/] is not a type" in printed, printed
