"""The metrics listener on its own port serves the registry at /metrics and nothing of the service."""

import asyncio

import httpx
from prometheus_client import CollectorRegistry, Counter

from credited.stack.processes import free_port
from servicekit.metrics_server import serve_metrics


async def test_the_metrics_port_serves_the_registry_and_refuses_everything_else() -> None:
    registry = CollectorRegistry()
    Counter("payments_orders_total", "Orders placed.", registry=registry).inc(3)
    port = free_port()
    task = asyncio.create_task(serve_metrics(registry, "127.0.0.1", port))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                try:
                    metrics = await client.get("/metrics")
                    break
                except httpx.TransportError:
                    assert asyncio.get_running_loop().time() < deadline, "the metrics server did not start"
                    await asyncio.sleep(0.05)
            assert metrics.status_code == 200 and "payments_orders_total 3.0" in metrics.text
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/v1/orders/ord_1")).status_code == 404
            assert (await client.post("/metrics")).status_code == 405
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
