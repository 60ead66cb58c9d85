"""A service of two copies behind one port, for the runner's tests: each answers GET /pid with its process id
and counts the requests in a Prometheus counter; /metrics is the kit's.

    python -m tests.servicekit.copies_child PORT
"""

import os
import sys

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter

from servicekit.http import create_app, serve
from servicekit.runner import run, run_until_stopped


def app() -> FastAPI:
    registry = CollectorRegistry()
    asked = Counter("copies_pid_requests_total", "GET /pid answered.", registry=registry)
    service = create_app(title="copies", version="1", registry=registry)

    @service.get("/pid")
    async def pid() -> dict[str, int]:
        asked.inc()
        return {"pid": os.getpid()}

    return service


async def main() -> None:
    async def stopped() -> None:
        pass

    await run_until_stopped([serve(app(), "127.0.0.1", int(sys.argv[1]))], on_stop=stopped)


if __name__ == "__main__":
    run(main, processes=2, address=("127.0.0.1", int(sys.argv[1])))
