"""What a browser is told about the order status page (a user's page, opened from the order's signed link):
another site may not frame it, and a Content-Security-Policy lets only the page's own script run and its own
origin be asked for the live stream. Both for the order's page and for the plain 404 a bad link gets."""

from collections.abc import AsyncIterator

import httpx
import pytest

from contracts.events import OrderStatus
from tests.conftest import Broker
from tests.notifier.harness import RunningNotifier, change, notifier_settings, publish, start_notifier
from tests.notifier.integration.test_status_page_browser import status_link


@pytest.fixture
async def running(broker: Broker, database_url: str, isolation: str) -> AsyncIterator[RunningNotifier]:
    started = await start_notifier(notifier_settings(broker, database_url, isolation))
    yield started
    await started.stop()


def assert_not_frameable_and_script_limited(response: httpx.Response) -> None:
    headers = dict(response.headers)
    policy = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy or response.headers.get("x-frame-options") == "DENY", headers
    assert "script-src" in policy or "default-src" in policy, headers
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[-1].split(";", 1)[0], policy


async def test_the_status_page_and_its_not_found_page_cannot_be_framed_and_limit_what_script_runs(
    running: RunningNotifier, broker: Broker, isolation: str
) -> None:
    await publish(broker, f"{isolation}.", change("ord_frame", OrderStatus.DELAYED, 2))
    await running.wait_until_consumed("ord_frame", 1)
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(status_link(running.url, "ord_frame", "u1"))
        assert page.status_code == 200 and 'id="steps"' in page.text
        assert_not_frameable_and_script_limited(page)
        bare = await browser.get(f"{running.url}/orders/ord_frame")
        assert bare.status_code == 404
        assert_not_frameable_and_script_limited(bare)
