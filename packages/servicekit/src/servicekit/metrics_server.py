"""/metrics on a port of its own, for the monitoring network only.

Why a separate port and not an allow-list of client addresses on the public one: who may reach a port is
what networks already decide well (docker-compose: the metrics port is published to no host and reachable
only on the network Prometheus shares with the services; Kubernetes: a NetworkPolicy; a firewall rule on a
VM), and the decision holds whatever stands in front of the public port. An allow-list inside the app would
have to trust the peer address, which behind a TLS proxy or a load balancer is the proxy's for every client
(so it allows everyone) or comes from X-Forwarded-For (which any client can write), and it would have to
follow Prometheus's address as it moves. The public app keeps /healthz, which says nothing but ready or
not, and has no /metrics (404).

`serve_metrics` runs beside the service's HTTP server in the same event loop, answering `GET /metrics` and
`GET /healthz` and 404 to anything else, on <SERVICE>_METRICS_PORT (by default the HTTP port + 1000:
servicekit.settings). A service run as several copies (servicekit.runner) serves it once, from its first copy,
with every copy's metrics summed: the copies write them to one directory (prometheus_client's multiprocess mode).
"""

import asyncio
import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Receive, Scope, Send

from servicekit.runner import METRICS_DIR, process_index
from servicekit.serving import serve


class MetricsApp:
    """A minimal ASGI app: the registry's exposition at /metrics, and nothing else of the service."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan and websockets: nothing to do here
        if scope["method"] not in ("GET", "HEAD"):
            status, body, content_type = 405, b"method not allowed\n", "text/plain"
        elif scope["path"] == "/metrics":
            status, body, content_type = 200, generate_latest(self._registry), CONTENT_TYPE_LATEST
        elif scope["path"] == "/healthz":
            status, body, content_type = 200, b'{"status":"ok"}', "application/json"
        else:
            status, body, content_type = 404, b"not found: this port serves /metrics only\n", "text/plain"
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def serves_metrics() -> bool:
    """Whether this process serves the service's /metrics: it runs alone, or it is the first of the copies."""
    return process_index() in (None, 0)


def all_processes(registry: CollectorRegistry) -> CollectorRegistry:
    """`registry`, or, when the service runs as several copies (servicekit.runner), every copy's metrics summed."""
    if METRICS_DIR not in os.environ:
        return registry
    summed = CollectorRegistry()
    MultiProcessCollector(summed)  # type: ignore[no-untyped-call]
    return summed


async def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, *, stopping: asyncio.Event | None = None, grace_s: float = 10.0
) -> None:
    """Serve `registry` (all copies' metrics, see `all_processes`) on host:port until cancelled or `stopping` is
    set (CREDITED_METRICS_HOST, <SERVICE>_METRICS_PORT). The port is this process's alone, never shared."""
    await serve(MetricsApp(all_processes(registry)), host, port, stopping=stopping, grace_s=grace_s, shared=False)
