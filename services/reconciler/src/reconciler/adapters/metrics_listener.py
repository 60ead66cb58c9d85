"""The reconciler's /metrics on its own port (servicekit.metrics_server), started with the faust app."""

import faust
from prometheus_client import CollectorRegistry

from servicekit.metrics_server import serve_metrics


class MetricsListener(faust.Service):  # type: ignore[misc]  # faust is untyped
    """Serves the worker's registry on host:port from the app's start (before its table's recovery, which
    Prometheus should see) until the app stops; a dependency of the app, so faust starts and stops it."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        super().__init__()
        self._registry, self._host, self._port = registry, host, port

    async def on_start(self) -> None:
        self.add_future(self._serve())  # cancelled when the app stops

    async def _serve(self) -> None:
        self.log.info("serving /metrics on http://%s:%d", self._host, self._port)
        await serve_metrics(self._registry, self._host, self._port)
