"""A user with an order's page open in two windows (side by side, or a laptop and a phone on one link) holds more
streams than the order's limit allows: the newer page's stream takes the place of the older one's, which ends with
`superseded`. The older page then stays still until it is looked at again, on purpose (the newer one is live). It must
say that, in the user's language: "Reconnecting…" would promise a reconnection that never comes while the window
stays in view."""

# ruff: noqa: RUF001 - Chinese text uses full-width punctuation on purpose

import asyncio
from collections.abc import Callable
from datetime import timedelta

import httpx
from selenium.webdriver.remote.webdriver import WebDriver

from contracts.events import OrderStatus
from tests.conftest import Broker
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import T0, change, publish
from tests.notifier.integration.test_live_stream_limits import events_url, stream
from tests.notifier.integration.test_status_page_browser import (
    browser,  # noqa: F401 - the fixture
    status_link,
    text_of,
    until,
)

PAUSED = {
    "zh-TW": "已暫停：這筆訂單已在另一個視窗開啟",
    "en": "Paused: this order is open in another window",
}


async def test_a_page_whose_stream_a_newer_window_took_says_it_is_paused_in_the_user_s_language_in_chromium(
    notifier: StartNotifier,
    browser: WebDriver,  # noqa: F811
    broker: Broker,
    isolation: str,
) -> None:
    running = await notifier(max_streams_per_order=1)
    assert (await running.api.put(f"{running.url}/v1/users/u1/locale", json={"locale": "zh-TW"})).is_success
    await publish(
        broker, f"{isolation}.", change("ord_twice", OrderStatus.UNDER_REVIEW, 2, eta=T0 + timedelta(hours=2))
    )
    await running.wait_until_consumed("ord_twice", 1)

    for lang, live in (("zh-TW", "即時"), ("en", "Live")):
        await asyncio.to_thread(browser.get, f"{status_link(running.url, 'ord_twice', 'u1')}&lang={lang}")
        await until(browser, showing(live))
        async with (
            httpx.AsyncClient(timeout=30) as other_window,
            stream(other_window, events_url(running, "ord_twice")) as newer,
        ):
            assert newer.status_code == 200, newer.text
            await until(browser, showing(live, shown=False))  # its stream gave way
            assert browser.execute_script("return document.visibilityState") == "visible"
            await asyncio.sleep(3)  # past the stream's `retry: 2000`: it stays closed
            assert text_of(browser, "live") == PAUSED[lang]


def showing(words: str, *, shown: bool = True) -> Callable[[WebDriver], bool]:
    """Whether the page's live indicator says `words` (or, with shown=False, anything else)."""
    return lambda driver: (text_of(driver, "live") == words) is shown
