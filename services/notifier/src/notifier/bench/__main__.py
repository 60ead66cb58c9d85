"""python -m notifier.bench [--orders N --rate R --burst B --users U --out PATH]

KAFKA_BOOTSTRAP (with KAFKA_BROKER=apache|tansu) and DATABASE_URL point at running servers; unset, the
embedded Tansu broker and an embedded PostgreSQL are started for the run. Prints the JSON report.
"""

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from notifier.bench import BenchOptions, Stack, run_bench


def main() -> None:
    defaults = BenchOptions()
    parser = argparse.ArgumentParser(prog="python -m notifier.bench", description=__doc__)
    parser.add_argument("--orders", type=int, default=defaults.orders, help="status changes in the steady phase")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="status changes per second, steady phase")
    parser.add_argument("--burst", type=int, default=defaults.burst, help="status changes published at once")
    parser.add_argument("--users", type=int, default=defaults.users, help="users, each with one subscribed browser")
    parser.add_argument("--out", type=Path, default=defaults.out, help="where the JSON report goes")
    parser.add_argument("--profile", type=Path, default=None, help="write the notifier's cProfile here")
    args = parser.parse_args()
    options = BenchOptions(
        orders=args.orders, rate=args.rate, burst=args.burst, users=args.users, out=args.out, profile=args.profile
    )
    logging.basicConfig(level=logging.WARNING)
    sys.stdout.write(orjson.dumps(embedded_and_run(options), option=orjson.OPT_INDENT_2).decode() + "\n")


def embedded_and_run(options: BenchOptions) -> dict[str, object]:
    """Run on the servers from the environment, starting embedded ones for what is not given."""
    from credited.stack.embedded import EmbeddedKafka, EmbeddedPostgres
    from credited.stack.processes import free_port

    logs = options.out.parent / "notifier-logs"
    workdir = Path(tempfile.mkdtemp(prefix="credited-notifier-bench-"))
    kafka = postgres = None
    try:
        bootstrap, broker = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("KAFKA_BROKER", "apache")
        if not bootstrap:
            kafka = EmbeddedKafka(free_port(), logs)
            kafka.start()
            bootstrap, broker = kafka.bootstrap, "tansu"
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            postgres = EmbeddedPostgres(workdir / "pg", free_port(), logs)
            postgres.start()
            database_url = postgres.dsn
        return asyncio.run(run_bench(Stack(bootstrap, broker, database_url), options, logs))
    finally:
        if postgres is not None:
            postgres.stop()
        if kafka is not None:
            kafka.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
