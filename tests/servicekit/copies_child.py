"""A service of two copies behind one port, for the runner's tests: each answers GET /pid with its process id
and counts the requests in a Prometheus counter; /metrics is the kit's, on its own port, served by the first
copy as a service does (servicekit.infrastructure).

    python -m tests.servicekit.copies_child PORT METRICS_PORT
"""

import os
import sys

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter

from servicekit.http import create_app, serve
from servicekit.metrics_server import serve_metrics, serves_metrics
from servicekit.runner import run, run_until_stopped


def app(registry: CollectorRegistry) -> FastAPI:
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

    registry = CollectorRegistry()
    tasks = [serve(app(registry), "127.0.0.1", int(sys.argv[1]))]
    if serves_metrics():
        tasks.append(serve_metrics(registry, "127.0.0.1", int(sys.argv[2])))
    await run_until_stopped(tasks, on_stop=stopped)


if __name__ == "__main__":
    run(main, processes=2, address=("127.0.0.1", int(sys.argv[1])))
