"""/metrics on a port of its own (servicekit.metrics_server): the listener serves the registry and nothing of the
service, a running service serves it there and not on its public port, and so does the reconciler's faust app."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter

from credited.stack.processes import free_port
from ledger.bootstrap import build as build_ledger
from ledger.config import Settings as LedgerSettings
from reconciler.adapters.metrics_listener import MetricsListener
from reconciler.bootstrap import build as build_reconciler
from reconciler.config import Settings as ReconcilerSettings
from servicekit.metrics_server import serve_metrics
from tests.conftest import Broker
from tests.service_settings import settings_for


async def answered(call: Callable[[], Awaitable[httpx.Response]], timeout_s: float = 30) -> httpx.Response:
    """`call`'s answer once the server it asks listens."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await call()
        except httpx.TransportError:
            assert asyncio.get_running_loop().time() < deadline, "the server did not start"
            await asyncio.sleep(0.05)


async def test_the_metrics_port_serves_the_registry_and_refuses_everything_else() -> None:
    registry = CollectorRegistry()
    Counter("payments_orders_total", "Orders placed.", registry=registry).inc(3)
    port = free_port()
    task = asyncio.create_task(serve_metrics(registry, "127.0.0.1", port))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            metrics = await answered(lambda: client.get("/metrics"))
            assert metrics.status_code == 200 and "payments_orders_total 3.0" in metrics.text
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/v1/orders/ord_1")).status_code == 404
            assert (await client.post("/metrics")).status_code == 405
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_running_service_serves_metrics_on_its_metrics_port_and_404_on_its_public_port(
    broker: Broker, database_url: str, isolation: str
) -> None:
    http_port, metrics_port = free_port(), free_port()
    settings = settings_for(
        LedgerSettings, broker, database_url, isolation, http_port=http_port, metrics_port=metrics_port
    )
    assert settings.metrics_address == ("127.0.0.1", metrics_port)
    infra, app = await build_ledger(settings, connect=False)
    running = asyncio.create_task(infra.run(app))
    try:
        async with httpx.AsyncClient() as client:
            public = await answered(lambda: client.get(f"http://127.0.0.1:{http_port}/metrics"))
            assert public.status_code == 404 and public.json()["error"] == "not_found", public.text
            metrics = await answered(lambda: client.get(f"http://127.0.0.1:{metrics_port}/metrics"))
            assert metrics.status_code == 200
            # The public request above is counted, and served where Prometheus scrapes.
            assert 'credited_http_requests_total{code="404",method="GET",route="unmatched",service="ledger"}' in (
                metrics.text
            )
            assert (await client.get(f"http://127.0.0.1:{metrics_port}/v1/users/u1")).status_code == 404
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_the_reconciler_serves_metrics_on_its_own_port_and_its_web_pages_have_none(tmp_path: Path) -> None:
    http_port, metrics_port = free_port(), free_port()
    settings = ReconcilerSettings(http_port=http_port, metrics_port=metrics_port, data_dir=tmp_path)
    app = build_reconciler(settings)
    pages = {resource.canonical for resource in app.web.web_app.router.resources()}
    assert "/healthz" in pages and "/metrics" not in pages
    (listener,) = [child for child in app._children if isinstance(child, MetricsListener)]  # started with the app
    await listener.start()
    try:
        async with httpx.AsyncClient() as client:
            metrics = await answered(lambda: client.get(f"http://127.0.0.1:{metrics_port}/metrics"))
        assert metrics.status_code == 200 and "reconciler_events_total" in metrics.text
    finally:
        await listener.stop()
