"""faust's own ceiling on this machine: a bare faust agent with the reconciler's faust settings (the shared
Kafka batching, acks from all replicas, uvloop) that only decodes each record with the contract codec and
writes one table row per record (one changelog record each), the plain faust way: one event at a time.

It writes a JSON line when it has read its first event and one when it has read `--events` (then it exits),
so a runner times it from its first event to its last as it times the reconciler.

    python -m harness.bench.peer_faust --events N --out FILE   (KAFKA_BOOTSTRAP, CREDITED_TOPIC_PREFIX, ...)
"""

import argparse
import os
import time
import uuid
from pathlib import Path
from typing import IO, Any

import faust
import orjson
import uvloop

from contracts.codec import DecodeError, decode
from contracts.topics import Topic
from reconciler.bench import Settings, faust_options


def build(settings: Settings, events: int, out: IO[bytes]) -> faust.App:
    prefix = settings.topic_prefix
    app = faust.App(f"{prefix}bare-faust-{uuid.uuid4().hex[:6]}", **faust_options(settings), web_enabled=False)
    rows = app.Table("rows", default=None, partitions=settings.topic_partitions)
    source = app.topic(
        Topic.PAYMENTS_EVENTS.qualified(prefix),
        Topic.LEDGER_EVENTS.qualified(prefix),
        key_serializer="raw",
        value_serializer="raw",
    )
    seen = {"events": 0, "first_at": 0.0}

    def saw() -> None:
        now = time.time()
        if not seen["events"]:
            seen["first_at"] = now
            out.write(orjson.dumps({"ready": now}) + b"\n")
            out.flush()
        seen["events"] += 1
        if seen["events"] >= events:
            out.write(orjson.dumps({"events": seen["events"], "first_at": seen["first_at"], "last_at": now}) + b"\n")
            out.flush()
            os._exit(0)

    @app.agent(source)  # type: ignore[untyped-decorator]  # faust is untyped
    async def bare(stream: Any) -> None:
        async for event in stream.events():
            try:
                message, envelope = decode(event.value, list(event.message.headers or []))
            except DecodeError:
                continue
            rows[message.order_id] = {"type": envelope.event_type, "offset": event.message.offset}
            saw()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.peer_faust", description=__doc__)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    settings = Settings()
    uvloop.install()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with args.out.open("ab") as out:
        app = build(settings, args.events, out)
        worker = faust.Worker(app, loglevel="warning", workdir=str(settings.data_dir))
        worker.spinner = None
        worker.execute_from_commandline()


if __name__ == "__main__":
    main()
