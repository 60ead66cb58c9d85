"""Phones on flaky networks leave streams behind that the server still counts as open (a connection that vanished
without a word is only noticed when the kernel gives up on it). A page's own link takes the place of its oldest one
(test_a_vanished_phone_s_stream_gives_way), but those of other orders fill the server's bound, so a page's stream can
be refused with 429 and Retry-After. A browser's EventSource never reconnects after an answer other than 200: the page
must open its stream again itself, or it stays "reconnecting" and never shows the order's final status."""

import asyncio
import logging

import httpx
import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from contracts.events import OrderStatus
from tests.conftest import Broker
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import T0, change, publish
from tests.notifier.integration.test_live_stream_limits import events_url, stream
from tests.notifier.integration.test_status_page_browser import (
    browser,  # noqa: F401 - the fixture
    status_link,
    steps,
    text_of,
    until,
)


async def test_a_page_whose_stream_was_refused_opens_it_again_and_shows_the_credit_in_chromium(
    notifier: StartNotifier,
    browser: WebDriver,  # noqa: F811
    broker: Broker,
    isolation: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="notifier.adapters.status_page")
    running = await notifier(max_streams=1)
    prefix = f"{isolation}."
    await publish(broker, prefix, change("ord_flaky", OrderStatus.DELAYED, 2, eta=T0))
    await running.wait_until_consumed("ord_flaky", 1)

    async with (
        httpx.AsyncClient(timeout=30) as phone,
        stream(phone, events_url(running, "ord_elsewhere")) as left_behind,
    ):
        assert left_behind.status_code == 200
        await asyncio.to_thread(browser.get, f"{status_link(running.url, 'ord_flaky', 'u1')}&lang=en")
        await until(browser, lambda d: d.find_elements("css selector", '#steps li[data-key="delayed"]'))
        await until(browser, lambda _: "live stream refused for order ord_flaky" in caplog.text)
        assert text_of(browser, "live") == "Reconnecting…"
        # the server notices the old connection at last: its slot is free again

    await publish(broker, prefix, change("ord_flaky", OrderStatus.CREDITED, 3))
    await until(browser, lambda d: d.execute_script("return document.body.dataset.final") == "true", timeout_s=30)
    assert text_of(browser, "headline") == "Top-up credited"
    assert steps(browser)[-2:] == [("crediting", "done"), ("credited", "done")]
    await until(browser, lambda d: text_of(d, "live") == "Live")
