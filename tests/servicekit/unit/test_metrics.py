"""The credited_* metrics of the service kit: names, bounded labels, series that exist from the start."""

import httpx
from fastapi import APIRouter
from prometheus_client import CollectorRegistry, generate_latest

from servicekit.http import ApiError, create_app
from servicekit.metrics import DeadLetterKind, ServiceMetrics


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def app_with_orders(registry: CollectorRegistry) -> httpx.AsyncClient:
    app = create_app(title="t", version="1", registry=registry)
    router = APIRouter()

    @router.get("/v1/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, str]:
        if order_id == "missing":
            raise ApiError(404, "unknown_order", "no such order")
        return {"order_id": order_id}

    app.include_router(router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


async def test_http_requests_are_counted_by_route_template_never_by_raw_path() -> None:
    registry = CollectorRegistry()
    ServiceMetrics("payments", registry)
    async with app_with_orders(registry) as client:
        for order_id in ("ord_1", "ord_2", "missing"):
            await client.get(f"/v1/orders/{order_id}")
        await client.get("/no/such/page")
        await client.get("/v1/orders/ord_3")
        await client.request("BREW", "/v1/orders/ord_4")
    body = generate_latest(registry).decode()  # what the metrics port serves (servicekit.metrics_server)

    route = "/v1/orders/{order_id}"
    labels = {"service": "payments", "route": route, "method": "GET"}
    assert value(registry, "credited_http_requests_total", **labels, code="200") == 3
    assert value(registry, "credited_http_requests_total", **labels, code="404") == 1
    unmatched = {"service": "payments", "route": "unmatched", "method": "GET", "code": "404"}
    assert value(registry, "credited_http_requests_total", **unmatched) == 1
    assert value(registry, "credited_http_requests_total", **{**labels, "method": "other"}, code="405") == 1
    assert value(registry, "credited_http_request_duration_seconds_count", service="payments", route=route) == 5
    assert "ord_1" not in body and "/no/such/page" not in body


async def test_the_public_app_answers_metrics_with_a_404_in_the_credited_error_shape() -> None:
    registry = CollectorRegistry()
    ServiceMetrics("payments", registry)
    async with app_with_orders(registry) as client:
        response = await client.get("/metrics")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert "credited_http_requests_total" not in response.text


def test_every_dead_letter_kind_and_topic_series_exists_before_the_first_record() -> None:
    registry = CollectorRegistry()
    ServiceMetrics("ledger", registry).consumer("ledger.payments", ["payments.events"], topic_prefix="t1.")
    for kind in DeadLetterKind:
        labels = {"service": "ledger", "group": "ledger.payments", "reason_kind": kind.value}
        assert value(registry, "credited_dead_letters_total", **labels) == 0
    topic = {"service": "ledger", "group": "ledger.payments", "topic": "payments.events"}
    assert value(registry, "credited_consumer_records_total", **topic) == 0


def test_consumer_metrics_name_the_unprefixed_topic_and_drop_partitions_no_longer_held() -> None:
    registry = CollectorRegistry()
    consumer = ServiceMetrics("ledger", registry).consumer("ledger.payments", ["payments.events"], topic_prefix="t1.")
    consumer.consumed("t1.payments.events", 5)
    consumer.lag({("t1.payments.events", 0): 7, ("t1.payments.events", 1): 0})
    consumer.lag({("t1.payments.events", 1): 3})

    group = {"service": "ledger", "group": "ledger.payments", "topic": "payments.events"}
    assert value(registry, "credited_consumer_records_total", **group) == 5
    assert value(registry, "credited_consumer_lag_records", **group, partition="0") is None
    assert value(registry, "credited_consumer_lag_records", **group, partition="1") == 3


def test_outbox_metrics_count_published_rows_and_report_the_backlog() -> None:
    registry = CollectorRegistry()
    outbox = ServiceMetrics("notifier", registry).outbox()
    assert value(registry, "credited_outbox_published_total", service="notifier") == 0
    outbox.published(12)
    outbox.backlog(4, 1.5)
    assert value(registry, "credited_outbox_published_total", service="notifier") == 12
    assert value(registry, "credited_outbox_backlog_records", service="notifier") == 4
    assert value(registry, "credited_outbox_oldest_age_seconds", service="notifier") == 1.5
