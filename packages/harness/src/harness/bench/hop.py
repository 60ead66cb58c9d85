"""`credited bench-hop`: what one consumer->producer hop costs, per Kafka client and cycle shape, at fixed rates.

Every service of the pipeline is a chain of such hops: poll records, do the work, publish what follows, await
the acknowledgements, commit the offsets. This bench keeps only the Kafka part of a hop, so a choice of client
or cycle shape can be measured before a service is rewritten for it. A feeder process publishes records at a
fixed rate to a topic of 6 partitions (the stack's default); a hop process consumes them in a group (manual
commits, read_committed), publishes each to a second topic (acks=all, idempotent) and awaits the
acknowledgements, then commits the poll's offsets: the shape of servicekit's consumer and publisher, with their
batching settings (KafkaTuning: fetch wait, records per poll, linger). Counted
over the timed phase: the hop process's CPU (all its threads: librdkafka's too) and the broker's, per record,
records per poll, CPU per poll cycle, and the hop latency (feeder's send to the hop's acknowledged publish).

Variants (`--variants`): `aiokafka` (what the services run), `confluent` (librdkafka, its blocking calls on one
executor thread, acknowledgements from a polling thread), and either client with `:commit=S` (offsets
committed at most every S seconds rather than every poll) or `:pace=MS` (a cycle that brought records takes at
least MS milliseconds, so more records share the next). Every round runs each variant in turn, each on fresh
topics; the report gives medians over the rounds and ratios to the first variant. The broker's CPU includes
the feeder's produce requests, the same for every variant.
"""

import asyncio
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import uvloop

from servicekit.settings import KafkaTuning

TUNING = KafkaTuning()
"""The services' batching settings (fetch wait, records per poll, linger): every variant's hop uses them."""
PARTITIONS = 6
VALUE = b"x" * 300
"""About the size of an encoded credited event."""

Polled = tuple[list[tuple[bytes | None, bytes | None, list[tuple[str, Any]]]], Any]
"""One poll: (key, value, headers) per record, and the offsets to commit in the client's own form."""


@dataclass(frozen=True)
class Variant:
    client: str
    commit_every_s: float = 0.0
    pace_ms: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """`client[:commit=S][:pace=MS]`, for example `aiokafka:commit=0.5`."""
        client, *options = text.split(":")
        if client not in ("aiokafka", "confluent"):
            raise ValueError(f"unknown client {client!r}: aiokafka or confluent")
        given: dict[str, float] = {}
        for option in options:
            name, _, value = option.partition("=")
            if name not in ("commit", "pace") or not value:
                raise ValueError(f"unknown option {option!r} in {text!r}: commit=S or pace=MS")
            given[name] = float(value)
        return cls(client, given.get("commit", 0.0), given.get("pace", 0.0))

    @property
    def name(self) -> str:
        return (
            self.client
            + (f":commit={self.commit_every_s:g}" if self.commit_every_s else "")
            + (f":pace={self.pace_ms:g}" if self.pace_ms else "")
        )


def cpu_seconds(pid: int | str = "self") -> float:
    """User and system CPU of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the feeder (a process of its own) ---


async def feed(bootstrap: str, topic: str, rate: float, seconds: float, idempotence: bool) -> None:
    """A probe record first (the hop answers `ready` once it has it, so the group has joined), then `rate`
    records a second for `seconds`, each stamped with its send time."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotence, linger_ms=2)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=VALUE, key=b"probe", headers=[("probe", b"1")])
        sys.stdout.write("probed\n")
        sys.stdout.flush()
        sys.stdin.readline()  # the driver says go once the hop has the probe
        started, sent, pending = time.monotonic(), 0, []
        while (elapsed := time.monotonic() - started) < seconds:
            for _ in range(int(elapsed * rate) - sent):
                stamp = [("sent", repr(time.time()).encode())]
                pending.append(await producer.send(topic, value=VALUE, key=str(sent % 997).encode(), headers=stamp))
                sent += 1
            if len(pending) > 1000:
                await asyncio.gather(*pending)
                pending = []
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


# --- the hop (a process of its own), one adapter per client ---


class AiokafkaHop:
    def __init__(self, bootstrap: str, source: str, target: str, idempotence: bool) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        self._consumer = AIOKafkaConsumer(
            source,
            bootstrap_servers=bootstrap,
            group_id=f"hop-{source}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=TUNING.fetch_max_wait_ms,
            max_poll_records=TUNING.fetch_max_records,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotence, linger_ms=TUNING.linger_ms
        )
        self._target = target

    async def start(self) -> None:
        await self._consumer.start()
        await self._producer.start()

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._producer.stop()

    async def poll(self) -> Polled:
        polled = await self._consumer.getmany(timeout_ms=500)
        records = [(r.key, r.value, list(r.headers)) for part in polled.values() for r in part]
        return records, {tp: part[-1].offset + 1 for tp, part in polled.items() if part}

    async def publish(self, records: Polled) -> None:
        send = self._producer.send
        await asyncio.gather(*[await send(self._target, value=v, key=k, headers=h) for k, v, h in records[0]])

    async def commit(self, offsets: Any) -> None:
        await self._consumer.commit(offsets)


class ConfluentHop:
    """librdkafka: blocking consumer calls on one executor thread; acknowledgements served by a polling thread
    and handed to the loop once per publish."""

    def __init__(self, bootstrap: str, source: str, target: str, idempotence: bool) -> None:
        from confluent_kafka import Consumer, Producer

        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"hop-{source}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": TUNING.fetch_max_wait_ms,
            }
        )
        self._consumer.subscribe([source])
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": idempotence,
                "linger.ms": TUNING.linger_ms,
            }
        )
        self._target = target
        self._thread = concurrent.futures.ThreadPoolExecutor(1)
        self._stopping = threading.Event()
        self._acks = threading.Thread(target=self._serve_acks, daemon=True)

    def _serve_acks(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.2)

    async def start(self) -> None:
        self._acks.start()

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._consumer.close)
        self._producer.flush(10)
        self._thread.shutdown()

    def _consume(self) -> list[Any]:
        first = self._consumer.poll(0.5)  # returns as soon as one record is there, like aiokafka's getmany
        return [] if first is None else [first, *self._consumer.consume(TUNING.fetch_max_records - 1, 0)]

    async def poll(self) -> Polled:
        from confluent_kafka import TopicPartition

        messages = await asyncio.get_running_loop().run_in_executor(self._thread, self._consume)
        records, offsets = [], {}
        for m in messages:
            if m.error() is None:
                records.append((m.key(), m.value(), list(m.headers() or [])))
                offsets[(m.topic(), m.partition())] = m.offset() + 1
        return records, [TopicPartition(t, p, o) for (t, p), o in offsets.items()]

    async def publish(self, records: Polled) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        left = len(records[0])
        failures: list[Any] = []

        def acknowledged(error: Any, _message: Any) -> None:
            nonlocal left
            left -= 1
            if error is not None:
                failures.append(error)
            if left == 0:
                loop.call_soon_threadsafe(done.set_result, None)

        for key, value, headers in records[0]:
            self._producer.produce(self._target, value=value, key=key, headers=headers, on_delivery=acknowledged)
        await done
        if failures:
            raise RuntimeError(f"{len(failures)} records refused: {failures[0]}")

    async def commit(self, offsets: Any) -> None:
        commit = self._consumer.commit
        await asyncio.get_running_loop().run_in_executor(
            self._thread, lambda: commit(offsets=offsets, asynchronous=False)
        )


async def hop(
    bootstrap: str, variant: Variant, source: str, target: str, seconds: float, idempotence: bool, out: TextIO
) -> None:
    """Run the hop; answer `ready` on the probe record, then time `seconds` from the first record after it and
    write the figures as one JSON line."""
    adapter = (AiokafkaHop if variant.client == "aiokafka" else ConfluentHop)(bootstrap, source, target, idempotence)
    await adapter.start()
    try:
        figures = await _cycle(adapter, variant, seconds, out)
    finally:
        await adapter.stop()
    out.write(json.dumps(figures) + "\n")


async def _cycle(adapter: AiokafkaHop | ConfluentHop, variant: Variant, seconds: float, out: TextIO) -> dict[str, Any]:
    commit = _committing(adapter, variant.commit_every_s)
    latencies: list[float] = []
    records_total = polls = 0
    started = cpu_at_start = 0.0
    while not started or time.monotonic() - started < seconds:
        cycle_began = time.monotonic()
        polled = await adapter.poll()
        if not polled[0]:
            continue
        if not started:
            if any(key == b"probe" for key, _, _ in polled[0]):
                await adapter.commit(polled[1])
                out.write("ready\n")
                out.flush()
                continue
            started, cpu_at_start = time.monotonic(), cpu_seconds()
        await adapter.publish(polled)
        await commit(polled[1])
        acknowledged = time.time()
        latencies += [acknowledged - float(dict(headers)["sent"]) for _, _, headers in polled[0]]
        records_total += len(polled[0])
        polls += 1
        if variant.pace_ms and (rest := variant.pace_ms / 1000 - (time.monotonic() - cycle_began)) > 0:
            await asyncio.sleep(rest)
    cpu = cpu_seconds() - cpu_at_start
    latencies.sort()
    return {
        "records": records_total,
        "polls": polls,
        "wall_s": time.monotonic() - started,
        "cpu_s": cpu,
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2],
        "latency_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


def _committing(adapter: AiokafkaHop | ConfluentHop, every_s: float) -> Callable[[Any], Awaitable[None]]:
    """Commit every poll's offsets, or gather them and commit at most every `every_s` seconds."""
    if not every_s:
        return adapter.commit
    pending: dict[Any, Any] = {}
    last = time.monotonic()

    async def commit(offsets: Any) -> None:
        nonlocal last
        pending.update(offsets if isinstance(offsets, dict) else {(tp.topic, tp.partition): tp for tp in offsets})
        if time.monotonic() - last >= every_s:
            await adapter.commit(dict(pending) if isinstance(offsets, dict) else list(pending.values()))
            pending.clear()
            last = time.monotonic()

    return commit


# --- the driver ---


@dataclass(frozen=True)
class HopOptions:
    bootstrap: str
    broker_pid: int | None
    """The broker's process, whose CPU is counted; None for a broker elsewhere (its figures are then None)."""
    variants: tuple[Variant, ...]
    rates: tuple[float, ...] = (100.0, 400.0, 1500.0)
    rounds: int = 3
    seconds: float = 20.0
    idempotence: bool = True
    """Idempotent producers, as the services have on Apache Kafka; Tansu refuses them."""


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.bench.hop", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def _expect(child: subprocess.Popen[str], line: str, what: str) -> None:
    assert child.stdout is not None
    got = child.stdout.readline().strip()
    if got != line:
        child.kill()
        raise RuntimeError(f"{what} answered {got!r}, not {line!r} (exit {child.wait()})")


def run_step(options: HopOptions, variant: Variant, rate: float) -> dict[str, Any]:
    """One variant at one rate on fresh topics: the hop's figures and the broker's CPU per record."""
    from servicekit.kafka import ensure_topics

    tag = uuid.uuid4().hex[:8]
    source, target = f"hop-in-{tag}", f"hop-out-{tag}"
    asyncio.run(ensure_topics(options.bootstrap, [source, target], PARTITIONS))
    producing = "idempotent" if options.idempotence else "plain"
    hopping = _child("hop", options.bootstrap, producing, variant.name, source, target, str(options.seconds))
    feeding = _child("feed", options.bootstrap, producing, source, str(rate), str(options.seconds + 3))
    try:
        _expect(feeding, "probed", "the feeder")
        _expect(hopping, "ready", "the hop")
        broker_at_start = _broker_cpu(options)
        assert feeding.stdin is not None
        feeding.stdin.write("go\n")
        feeding.stdin.flush()
        out, _ = hopping.communicate(timeout=options.seconds + 60)
        broker_at_end = _broker_cpu(options)
        feeding.wait(timeout=60)
    finally:
        for child in (hopping, feeding):
            if child.poll() is None:
                child.kill()
    if hopping.returncode != 0:
        raise RuntimeError(f"the {variant.name} hop exited {hopping.returncode}")
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    broker = None if broker_at_start is None or broker_at_end is None else broker_at_end - broker_at_start
    figures.update(variant=variant.name, rate=rate, broker_cpu_s=broker)
    return figures


def _broker_cpu(options: HopOptions) -> float | None:
    return None if options.broker_pid is None else cpu_seconds(options.broker_pid)


def measure(options: HopOptions, progress: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    rows = []
    for round_ in range(options.rounds):
        for rate in options.rates:
            for variant in options.variants:
                row = run_step(options, variant, rate) | {"round": round_}
                progress(f"round {round_ + 1}, {rate:g}/s, {variant.name}: {row['records']} records")
                rows.append(row)
    return rows


COLUMNS = (
    ("hop_cpu_ms_per_record", "hop CPU ms/record"),
    ("broker_cpu_ms_per_record", "broker CPU ms/record"),
    ("both_cpu_ms_per_record", "hop + broker ms/record"),
    ("records_per_poll", "records/poll"),
    ("hop_cpu_ms_per_poll", "hop CPU ms/poll"),
    ("latency_p50_ms", "latency p50 ms"),
    ("latency_p99_ms", "latency p99 ms"),
)


def derived(row: dict[str, Any]) -> dict[str, float | None]:
    """A step's figures per record and per poll (the broker's None when it was not counted)."""
    records, polls, broker = max(row["records"], 1), max(row["polls"], 1), row["broker_cpu_s"]
    return {
        "hop_cpu_ms_per_record": 1000 * row["cpu_s"] / records,
        "broker_cpu_ms_per_record": None if broker is None else 1000 * broker / records,
        "both_cpu_ms_per_record": None if broker is None else 1000 * (row["cpu_s"] + broker) / records,
        "records_per_poll": row["records"] / polls,
        "hop_cpu_ms_per_poll": 1000 * row["cpu_s"] / polls,
        "latency_p50_ms": row["latency_p50_ms"],
        "latency_p99_ms": row["latency_p99_ms"],
    }


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rate and variant (in the order first seen), the median of each figure over the rounds and its
    ratio to the first variant's at that rate."""
    groups: dict[tuple[float, str], list[dict[str, float | None]]] = {}
    for row in rows:
        groups.setdefault((row["rate"], row["variant"]), []).append(derived(row))
    summary: list[dict[str, Any]] = []
    base: dict[float, dict[str, float | None]] = {}
    for (rate, variant), steps in groups.items():
        medians = {key: _median([step[key] for step in steps]) for key, _ in COLUMNS}
        base.setdefault(rate, medians)
        ratios = {key: _ratio(value, base[rate][key]) for key, value in medians.items()}
        summary.append({"rate": rate, "variant": variant, "rounds": len(steps), "median": medians, "ratio": ratios})
    return summary


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def render(summary: Sequence[dict[str, Any]], *, written: str, broker: str) -> str:
    lines = [
        "# One Kafka hop: CPU per record by client and cycle shape",
        "",
        f"Written {written} by `credited bench-hop` on {broker}; {os.cpu_count()} cores. Medians over the rounds "
        "(each variant in turn per round, on fresh topics); in brackets the ratio to the first variant at that "
        "rate. The broker's CPU includes the feeder's produce requests, the same for every variant. How it "
        "measures: the docstring of harness.bench.hop.",
        "",
        "| rate/s | variant | rounds | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for entry in summary:
        cells = []
        for key, _ in COLUMNS:
            value, ratio = entry["median"][key], entry["ratio"][key]
            if value is None:
                cells.append("not counted")
                continue
            cells.append(f"{value:.3g}" + (f" ({ratio:.2f}x)" if ratio is not None and ratio != 1 else ""))
        lines.append(f"| {entry['rate']:g} | {entry['variant']} | {entry['rounds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """The feeder's and the hop's processes: `feed BOOTSTRAP idempotent|plain TOPIC RATE SECONDS`, `hop
    BOOTSTRAP idempotent|plain VARIANT IN OUT SECONDS` (the driver runs them; see `credited bench-hop`)."""
    mode, bootstrap, producing, *rest = sys.argv[1:]
    idempotence = producing == "idempotent"
    if mode == "feed":
        topic, rate, seconds = rest
        uvloop.run(feed(bootstrap, topic, float(rate), float(seconds), idempotence))
    elif mode == "hop":
        variant, source, target, seconds = rest
        uvloop.run(hop(bootstrap, Variant.parse(variant), source, target, float(seconds), idempotence, sys.stdout))
    else:
        raise SystemExit(f"unknown mode {mode!r}: feed or hop")


if __name__ == "__main__":
    main()
