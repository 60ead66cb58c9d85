"""The peer: the same paid-but-not-credited join written as a Bytewax dataflow.

It reads payments.events and ledger.events from Kafka, decodes each record with the same contract codec
the reconciler uses, keys by order id and keeps per order whether it was paid (and its deadline, event
time paid_at + threshold) and whether it was credited. A timer at the deadline emits the order as
overdue if no credit has arrived. Flags are written as JSON lines to a file, with the wall time of the
flag; with `--no-tail` the flow stops at the end of the topics and also writes how long it read.

    python -m harness.bench.peer_bytewax --bootstrap HOST:PORT --prefix P --threshold S --out FILE [--no-tail]
"""

import argparse
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
from bytewax import operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from contracts.codec import DecodeError, decode
from contracts.events import CreditPosted, PaymentSucceeded
from contracts.topics import Topic

Flag = tuple[str, float]


@dataclass
class Progress:
    """Written by the decode step: how many events and when the first and last came."""

    events: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    out: IO[bytes] | None = None

    def saw(self) -> None:
        now = time.time()
        if self.events == 0:
            self.first_at = now
            if self.out is not None:  # the runner waits for this line before it times anything
                self.out.write(orjson.dumps({"ready": now}) + b"\n")
                self.out.flush()
        self.events += 1
        self.last_at = now


PROGRESS = Progress()


def to_event(
    msg: KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None],
) -> tuple[str, tuple[str, float]] | None:
    """(order id, ("paid", paid_at) or ("credited", 0.0)); other records are not part of the join."""
    PROGRESS.saw()
    if isinstance(msg, KafkaError):
        return None
    try:
        message, _ = decode(msg.value, [(k, v) for k, v in msg.headers])
    except DecodeError:
        return None
    if isinstance(message, PaymentSucceeded):
        return message.order_id, ("paid", message.paid_at.timestamp())
    if isinstance(message, CreditPosted):
        return message.order_id, ("credited", 0.0)
    return None


@dataclass
class OrderJoin(StatefulLogic[tuple[str, float], float, dict[str, Any]]):
    """One order's side of the join: paid (with deadline), credited, flagged."""

    threshold_s: float
    deadline: float | None = None
    credited: bool = False
    flagged: bool = False

    def on_item(self, value: tuple[str, float]) -> tuple[list[float], bool]:
        kind, paid_at = value
        if kind == "paid":
            self.deadline = paid_at + self.threshold_s
        else:
            self.credited = True
        return [], False

    def notify_at(self) -> datetime | None:
        if self.deadline is None or self.credited or self.flagged:
            return None
        return datetime.fromtimestamp(self.deadline, UTC)

    def on_notify(self) -> tuple[list[float], bool]:
        if self.deadline is None or self.credited or self.flagged:
            return [], False
        self.flagged = True
        return [time.time()], False

    def on_eof(self) -> tuple[list[float], bool]:
        return [], False

    def snapshot(self) -> dict[str, Any]:
        return {"deadline": self.deadline, "credited": self.credited, "flagged": self.flagged}


class _FlagPartition(StatelessSinkPartition[Flag]):
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def write_batch(self, items: list[Flag]) -> None:
        for order_id, flagged_at in items:
            self.out.write(orjson.dumps({"order_id": order_id, "flagged_at": flagged_at}) + b"\n")
        self.out.flush()


class FlagSink(DynamicSink[Flag]):
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FlagPartition:
        return _FlagPartition(self.out)


def build_flow(bootstrap: str, prefix: str, threshold_s: float, tail: bool, out: IO[bytes]) -> Dataflow:
    topics = [Topic.PAYMENTS_EVENTS.qualified(prefix), Topic.LEDGER_EVENTS.qualified(prefix)]
    flow = Dataflow("paid_not_credited")
    source = KafkaSource([bootstrap], topics, tail=tail, batch_size=1000)
    records = op.input("kafka", flow, source)
    events = op.filter_map("decode", records, to_event)
    flags = op.stateful("join", events, lambda resumed: _resume(threshold_s, resumed))
    op.output("flags", flags, FlagSink(out))
    return flow


def _resume(threshold_s: float, resumed: dict[str, Any] | None) -> OrderJoin:
    join = OrderJoin(threshold_s)
    if resumed is not None:
        join.deadline, join.credited, join.flagged = resumed["deadline"], resumed["credited"], resumed["flagged"]
    return join


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.peer_bytewax", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--threshold", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-tail", action="store_true", help="stop at the end of the topics")
    args = parser.parse_args()
    with args.out.open("ab") as out:
        PROGRESS.out = out
        flow = build_flow(args.bootstrap, args.prefix, args.threshold, not args.no_tail, out)
        run_main(flow)  # type: ignore[no-untyped-call]
        line = {"events": PROGRESS.events, "first_at": PROGRESS.first_at, "last_at": PROGRESS.last_at}
        out.write(orjson.dumps(line) + b"\n")


if __name__ == "__main__":
    main()
