"""`credited dlq list|show|replay`: the dead letters of credited.deadletter, read and re-driven.

The broker and its credentials come from the services' settings (KAFKA_BOOTSTRAP, KAFKA_BROKER,
CREDITED_TOPIC_PREFIX, KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_*); the principal needs to read the
dead-letter topic and the topics it replays to (to check each dead letter against its original), write the
topics it replays to, and read and write credited.deadletter.replays (and, on Apache Kafka, its transactional
id `credited-dlq-replay`). What a replay does: credited/deadletters.py; what it refuses: credited/provenance.py.
"""

import asyncio
import getpass
import json
import re
from collections import Counter
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # loaded by the commands that use them: pydantic and aiokafka cost a second at every start
    from credited.deadletters import DeadLetter, Filters, Outcome, Replay
    from servicekit.settings import ServiceSettings

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: another run took over; running again finishes what is left
_AGO = re.compile(r"^(?P<n>[1-9][0-9]{0,5})(?P<unit>[smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

T = TypeVar("T")

app = typer.Typer(help="Dead letters: list, show one, replay to the topic they came from.", no_args_is_help=True)

Topic = Annotated[str | None, typer.Option(help="Only those read from this topic (e.g. payments.events).")]
Group = Annotated[str | None, typer.Option(help="Only those this consumer group gave up on (e.g. ledger.payments).")]
Reason = Annotated[str | None, typer.Option(help="Only those whose reason contains this (any case).")]
Since = Annotated[str | None, typer.Option(help="Failed at or after: ISO 8601 with its zone, or 30m, 2h, 7d ago.")]
Until = Annotated[str | None, typer.Option(help="Failed before: ISO 8601 with its zone, or 30m, 2h, 7d ago.")]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


def parse_time(value: str | None, now: datetime) -> datetime | None:
    """`2h` (that long ago) or an ISO 8601 time with its zone."""
    if value is None:
        return None
    match = _AGO.match(value)
    if match:
        return now - timedelta(**{_UNITS[match["unit"]]: int(match["n"])})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: give 30m, 2h, 7d or an ISO 8601 time") from None
    if when.tzinfo is None:
        raise typer.BadParameter(f"{value!r}: give the time with its zone, e.g. 2026-11-22T08:00:00+00:00")
    return when.astimezone(UTC)


def _filters(
    ids: list[str], topic: str | None, group: str | None, reason: str | None, since: str | None, until: str | None
) -> "Filters":
    from credited.deadletters import Filters

    now = datetime.now(UTC)
    return Filters(frozenset(ids), topic, group, reason, parse_time(since, now), parse_time(until, now))


def _summary(letter: "DeadLetter", replayed: "Replay | None") -> dict[str, object]:
    return {
        "id": letter.id,
        "failed_at": letter.failed_at.isoformat(),
        "topic": letter.origin,
        "group": letter.header("dlq_consumer_group"),
        "key": letter.key.decode(errors="replace"),
        "event_type": letter.header("event_type"),
        "event_id": letter.header("event_id"),
        "reason": letter.header("dlq_reason"),
        "replayed": None if replayed is None else {"at": replayed.at, "by": replayed.by},
    }


def _print_rows(rows: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, sort_keys=True))
        return
    table = Table("id", "failed at", "topic", "group", "key", "event", "reason", "replayed")
    for row in rows:
        done = row["replayed"]
        replayed = f"{done['at']} by {done['by']}" if isinstance(done, dict) else ""
        cells = [row["id"], row["failed_at"], row["topic"], row["group"], row["key"], row["event_type"], row["reason"]]
        # Text, not str: rich reads a str as markup, and a reason quoting "[/x]" or "[red]" (an unknown event type
        # is quoted in its reason) stopped the list, or lost the words that say what was wrong.
        table.add_row(*(Text(str(c or "")) for c in [*cells, replayed]))
    Console(width=200).print(table)


@app.command("list")
def list_(
    topic: Topic = None,
    group: Group = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    as_json: AsJson = False,
) -> None:
    """The dead letters, oldest first, with whether and when each was replayed."""
    settings = _settings()
    chosen = _filters([], topic, group, reason, since, until)
    letters, done = _on_the_broker(settings, _with_replays(settings, chosen))
    _print_rows([_summary(d, done.get(d.coordinates)) for d in letters], as_json)


def _settings() -> "ServiceSettings":
    """The services' settings, read as they read them: a bad one stops the command naming the variable to fix, never
    with pydantic's error, which quotes what was given (a DATABASE_URL's password, KAFKA_SASL_PASSWORD)."""
    from servicekit.settings import ServiceSettings, read_settings

    return read_settings(ServiceSettings, "credited dlq")


def _on_the_broker(settings: "ServiceSettings", work: Coroutine[Any, Any, T]) -> T:
    """`work` run; a broker that cannot be reached, or refuses what the settings asked of it, is said in a sentence
    naming the settings to check, not a traceback (exit 2)."""
    from aiokafka.errors import KafkaError

    from servicekit.kafka import TopicsRefused

    try:
        return asyncio.run(work)
    except TopicsRefused as exc:
        typer.echo(
            f"{exc}: a replay records itself there before it sends anything. Create it as the deployment creates"
            " the other topics (one partition, cleanup.policy=compact), or run this as a principal that may.",
            err=True,
        )
        raise typer.Exit(2) from None
    except (KafkaError, OSError) as exc:
        typer.echo(
            f"the broker at {settings.kafka_bootstrap} ({settings.kafka_broker}) did not do what was asked: {exc!r}."
            " Set KAFKA_BOOTSTRAP, KAFKA_BROKER (tansu on the local stack; `credited up` prints both) and the"
            " KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* settings as the services have them.",
            err=True,
        )
        raise typer.Exit(2) from None


async def _with_replays(
    settings: "ServiceSettings", chosen: "Filters"
) -> tuple[list["DeadLetter"], dict[str, "Replay"]]:
    from credited.deadletters import dead_letters, replays

    return await dead_letters(settings, chosen), await replays(settings)


@app.command()
def show(dead_letter: Annotated[str, typer.Argument(help="Its id, <partition>@<offset>, as `list` shows.")]) -> None:
    """One dead letter: why, where from, every header and its payload decoded."""
    from contracts.codec import DecodeError, decode
    from credited.deadletters import Filters

    settings = _settings()
    letters, done = _on_the_broker(settings, _with_replays(settings, Filters(ids=frozenset([dead_letter]))))
    if not letters:
        typer.echo(f"no dead letter {dead_letter} in {settings.topic_prefix}credited.deadletter", err=True)
        raise typer.Exit(1)
    letter = letters[0]
    typer.echo(json.dumps(_summary(letter, done.get(letter.coordinates)), indent=2))
    typer.echo("headers:")
    for name, value in letter.headers:
        typer.echo(f"  {name}: {value.decode(errors='replace')}")
    try:
        message, _ = decode(letter.value, letter.original_headers)
        typer.echo("payload (decoded):\n" + message.model_dump_json(indent=2))
    except DecodeError as exc:
        typer.echo(f"payload (does not decode: {exc.reason}):\n{letter.value.decode(errors='replace')}")


@app.command("replay")
def replay_(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids (<partition>@<offset>).")] = None,
    topic: Topic = None,
    group: Group = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    every: Annotated[bool, typer.Option("--all", help="Every dead letter not replayed yet (no id or filter).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be replayed.")] = False,
    trust_unverified: Annotated[
        bool,
        typer.Option(
            "--trust-unverified",
            help="Also replay dead letters whose original the broker deleted (retention), so they cannot be checked"
            " against it; lists them and asks first.",
        ),
    ] = False,
    by: Annotated[str | None, typer.Option(help="Who asks (recorded with the replay); default: your login.")] = None,
) -> None:
    """Publish each chosen dead letter to the topic it came from, once: original key and headers (its event
    id too, so a consumer that applied it drops it) plus dlq_replayed_from; a second replay does nothing.
    Only a true copy of a record its consumer group read from that topic goes: any other is refused, with why
    (exit status 1 once the others are replayed)."""
    if not (ids or topic or group or reason or since or until or every):
        raise typer.BadParameter("name dead letters by id, filter them, or give --all")
    from credited.deadletters import ReplayInterrupted

    settings = _settings()
    chosen = _filters(ids or [], topic, group, reason, since, until)
    go_ahead = _Confirm(bulk=not ids, trust_unverified=trust_unverified)
    try:
        outcome, found = _on_the_broker(settings, _replay(settings, chosen, by or getpass.getuser(), dry_run, go_ahead))
    except ReplayInterrupted as exc:
        typer.echo(f"stopped: {exc}; run it again to finish what is left", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if not go_ahead.went:
        raise typer.Exit(1)
    _report(outcome, dry_run, trust_unverified)
    # An id named and not found (a typo, another topic prefix) must not pass for one replayed among the others.
    missing = [i for i in ids or [] if i not in found]
    for letter_id in missing:
        typer.echo(f"no dead letter {letter_id} (credited dlq list shows their ids)", err=True)
    if missing or (not dry_run and (outcome.refused or (outcome.unverified and not trust_unverified))):
        raise typer.Exit(1)


class _Confirm:
    """Before a replay sends anything: a bulk one (filters or --all) says where what goes; one that trusts
    unverified dead letters lists each and where it would go, and goes on only if the operator says so."""

    def __init__(self, *, bulk: bool, trust_unverified: bool) -> None:
        self.bulk, self.trust_unverified, self.went = bulk, trust_unverified, True

    def __call__(self, plan: "Outcome") -> bool:
        if self.bulk:
            typer.echo(f"replaying {_by_topic(plan)}")
        if self.trust_unverified and plan.unverified:
            for letter, why in plan.unverified:
                typer.echo(f"unverified {letter.id} would go to {letter.source_topic}: {why}")
            self.went = typer.confirm(f"replay these {len(plan.unverified)} unverified dead letters?", default=False)
        return self.went


def _by_topic(plan: "Outcome") -> str:
    counts = Counter(letter.source_topic for letter in plan.replayed)
    per_topic = ", ".join(f"{n} to {t}" for t, n in sorted(counts.items(), key=lambda c: str(c[0])))
    return f"{len(plan.replayed)}: {per_topic or 'none'} (refused {len(plan.refused)})"


async def _replay(
    settings: "ServiceSettings", chosen: "Filters", by: str, dry_run: bool, go_ahead: _Confirm
) -> tuple["Outcome", set[str]]:
    """What the replay did, and the ids of the letters the filters chose."""
    from credited.deadletters import dead_letters, replay

    letters = await dead_letters(settings, chosen)
    outcome = await replay(
        settings, letters, by=by, dry_run=dry_run, trust_unverified=go_ahead.trust_unverified, go_ahead=go_ahead
    )
    return outcome, {letter.id for letter in letters}


def _report(outcome: "Outcome", dry_run: bool, trust_unverified: bool) -> None:
    verb = "would replay" if dry_run else "replayed"
    for letter in outcome.replayed:
        typer.echo(f"{verb} {letter.id} to {letter.source_topic} (key {letter.key.decode(errors='replace')})")
    for letter, done in outcome.already:
        typer.echo(f"already replayed {letter.id} at {done.at} by {done.by}")
    for letter in outcome.not_replayable:
        typer.echo(f"cannot replay {letter.id}: no consumer read it ({letter.header('dlq_source')})")
    for letter, why in outcome.refused:
        typer.echo(f"refused {letter.id} (to {letter.source_topic}): {why}")
    if not trust_unverified:
        for letter, why in outcome.unverified:
            typer.echo(f"unverified {letter.id} (to {letter.source_topic}): {why}; --trust-unverified replays it")
    typer.echo(
        f"{verb} {_by_topic(outcome) if dry_run else len(outcome.replayed)}, already replayed {len(outcome.already)}, "
        f"not replayable {len(outcome.not_replayable)}, refused {len(outcome.refused)}, "
        f"unverified {0 if trust_unverified else len(outcome.unverified)}"
    )
