"""The order status page in Debian's headless Chromium, driven by Selenium through Debian's chromedriver,
opened through the order's signed status link as a user would: it shows the order's timeline in the user's
language and updates live, without a reload, when a new status arrives. Screenshots go to artifacts/notifier/
(not committed)."""

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from contracts.events import OrderStatus
from servicekit.links import StatusLinks
from tests.conftest import ROOT, Broker
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import T0, change, publish
from tests.notifier.integration.test_expired_order import expired, publish_payment_facts
from tests.service_settings import STATUS_LINK_SECRET

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "artifacts" / "notifier"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=480,960",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: the status page test needs Debian's chromium and chromium-driver"
            " (apt-get install -y chromium chromium-driver; .ci/run installs them)"
        )
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    in_zone(driver, "UTC")  # whatever zone the machine running the tests is in; a test moves it where it needs
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


async def until(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout_s: float = 30) -> Any:
    return await asyncio.to_thread(WebDriverWait(driver, timeout_s, poll_frequency=0.1).until, condition)


# The page re-renders its steps when the live stream delivers a state, so each read is one script run in the page
# (element by element, an element found could be replaced before it is read: a stale element reference).
def steps(driver: WebDriver) -> list[tuple[str | None, str | None]]:
    pairs = driver.execute_script(
        "return [...document.querySelectorAll('#steps li')].map(li => [li.dataset.key, li.dataset.state])"
    )
    return [(key, state) for key, state in pairs]


def labels(driver: WebDriver) -> list[str]:
    return list(driver.execute_script("return [...document.querySelectorAll('#steps .label')].map(e => e.innerText)"))


def status_link(base_url: str, order_id: str, user_id: str) -> str:
    """The link payments would give the user (signed with the tests' status-link secret)."""
    return StatusLinks([STATUS_LINK_SECRET]).url(base_url, order_id, user_id)


def text_of(driver: WebDriver, element_id: str) -> str:
    script = "const e = document.getElementById(arguments[0]); return e && e.innerText"
    return str(driver.execute_script(script, element_id))


async def test_the_status_page_shows_the_timeline_in_the_users_language_and_updates_live_in_chromium(
    notifier: StartNotifier, browser: WebDriver, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    assert (await running.api.put(f"{running.url}/v1/users/u1/locale", json={"locale": "zh-CN"})).is_success
    prefix = f"{isolation}."
    await publish(broker, prefix, change("ord_page", OrderStatus.DELAYED, 2, eta=T0 + timedelta(minutes=10)))
    await running.wait_until_consumed("ord_page", 1)

    link = status_link(running.url, "ord_page", "u1")
    await asyncio.to_thread(browser.get, link)
    await until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#steps li[data-key="delayed"]'))
    await until(browser, lambda d: text_of(d, "live") == "实时")  # the event stream is open
    assert text_of(browser, "headline") == "充值到账延迟"
    assert steps(browser) == [
        ("submitted", "done"),
        ("paid", "done"),
        ("delayed", "done"),
        ("crediting", "current"),
        ("credited", "upcoming"),
    ]
    assert "预计2026年11月22日 08:10（UTC）前到账" in text_of(browser, "steps")  # noqa: RUF001
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(browser.save_screenshot, str(ARTIFACTS / "status_page_zh-CN_delayed.png"))

    browser.execute_script("window.stillTheSamePage = true")
    await publish(broker, prefix, change("ord_page", OrderStatus.CREDITED, 3))
    await until(browser, lambda d: d.execute_script("return document.body.dataset.final") == "true")
    assert browser.execute_script("return window.stillTheSamePage") is True, "the page reloaded instead of updating"
    assert text_of(browser, "headline") == "充值已到账"
    assert steps(browser)[-2:] == [("crediting", "done"), ("credited", "done")]
    await asyncio.to_thread(browser.save_screenshot, str(ARTIFACTS / "status_page_zh-CN_credited.png"))

    await asyncio.to_thread(browser.get, f"{link}&lang=en")
    await until(browser, lambda d: text_of(d, "live") == "Live")
    assert text_of(browser, "headline") == "Top-up credited"
    assert labels(browser) == [
        "Order submitted",
        "Payment received",
        "Delayed",
        "Crediting",
        "Credited",
    ]
    await asyncio.to_thread(browser.save_screenshot, str(ARTIFACTS / "status_page_en_credited.png"))


async def test_the_status_page_of_a_taiwanese_user_is_in_traditional_chinese_with_times_in_taipei(
    notifier: StartNotifier, browser: WebDriver, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    chosen = {"locale": "zh-TW", "time_zone": "Asia/Taipei"}
    assert (await running.api.put(f"{running.url}/v1/users/u-tw/locale", json=chosen)).is_success
    delayed = change("ord_tw", OrderStatus.DELAYED, 2, user_id="u-tw", amount=30000, eta=T0 + timedelta(minutes=10))
    await publish(broker, f"{isolation}.", delayed)
    await running.wait_until_consumed("ord_tw", 1)
    await asyncio.to_thread(browser.get, status_link(running.url, "ord_tw", "u-tw"))
    await until(browser, lambda d: text_of(d, "live") == "即時")
    assert text_of(browser, "headline") == "儲值入帳延遲"
    assert "預計於2026年11月22日 下午4:10前入帳" in text_of(browser, "steps")  # 08:10 UTC is 16:10 in Taipei
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(browser.save_screenshot, str(ARTIFACTS / "status_page_zh-TW_delayed.png"))


async def test_a_bare_or_another_users_link_shows_no_timeline_in_chromium(
    notifier: StartNotifier, browser: WebDriver, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    await publish(broker, f"{isolation}.", change("ord_mine", OrderStatus.DELAYED, 2, user_id="u-me"))
    await running.wait_until_consumed("ord_mine", 1)
    for url in (f"{running.url}/orders/ord_mine", status_link(running.url, "ord_mine", "u-someone-else")):
        await asyncio.to_thread(browser.get, url)
        assert browser.find_elements(By.ID, "steps") == [], url
        assert "does not open an order" in browser.page_source, url


async def test_an_open_status_page_turns_to_expired_unpaid_when_the_order_expires_in_chromium(
    notifier: StartNotifier, browser: WebDriver, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    chosen = {"locale": "zh-TW", "time_zone": "Asia/Taipei"}
    assert (await running.api.put(f"{running.url}/v1/users/u-tw/locale", json=chosen)).is_success
    # no news of the order yet, so the page's language comes from the browser (here `lang`)
    await asyncio.to_thread(browser.get, f"{status_link(running.url, 'ord_exp', 'u-tw')}&lang=zh-TW")
    await until(browser, lambda d: text_of(d, "live") == "即時")
    assert steps(browser)[:2] == [("submitted", "done"), ("paid", "upcoming")]

    browser.execute_script("window.stillTheSamePage = true")
    await publish_payment_facts(broker, f"{isolation}.", (expired("ord_exp"), "evt-1"))
    await until(browser, lambda d: d.execute_script("return document.body.dataset.final") == "true")
    assert browser.execute_script("return window.stillTheSamePage") is True, "the page reloaded instead of updating"
    assert text_of(browser, "headline") == "儲值訂單已逾期"
    assert steps(browser) == [("submitted", "done"), ("expired", "done")]
    assert text_of(browser, "amount") == "$300.00"
    message = text_of(browser, "message")
    assert "不會扣任何款項" in message and "如需儲值，請重新下單" in message  # noqa: RUF001
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(browser.save_screenshot, str(ARTIFACTS / "status_page_zh-TW_expired.png"))


def step_times(driver: WebDriver) -> list[str]:
    return list(driver.execute_script("return [...document.querySelectorAll('#steps time')].map(e => e.innerText)"))


async def settled(driver: WebDriver, read: Callable[[WebDriver], Any], expected: Any, timeout_s: float = 10) -> None:
    """`read` comes to answer `expected` within `timeout_s`; if not, the assertion shows what it answers."""
    with contextlib.suppress(TimeoutException):
        await until(driver, lambda d: read(d) == expected, timeout_s)
    assert read(driver) == expected


def in_zone(driver: WebDriver, zone: str) -> None:
    """The browser's own time zone from now on, as a laptop set to it or a phone travelling there would have."""
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": zone})


async def test_a_status_page_shows_every_time_in_the_users_chosen_zone_whatever_the_browsers_zone(
    notifier: StartNotifier, browser: WebDriver, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    chosen = {"locale": "zh-TW", "time_zone": "Asia/Taipei"}
    assert (await running.api.put(f"{running.url}/v1/users/u-tz/locale", json=chosen)).is_success
    delayed = change("ord_tz", OrderStatus.DELAYED, 2, user_id="u-tz", eta=T0 + timedelta(minutes=10))
    await publish(broker, f"{isolation}.", delayed)
    await running.wait_until_consumed("ord_tz", 1)
    in_zone(browser, "America/New_York")  # 08:00 UTC is 03:00 there, 16:00 in Taipei
    await asyncio.to_thread(browser.get, status_link(running.url, "ord_tz", "u-tz"))
    await until(browser, lambda d: text_of(d, "live") == "即時")
    assert "預計於2026年11月22日 下午4:10前入帳" in text_of(browser, "steps")
    # paid at 08:00 UTC, delayed two seconds later: both 16:00 in Taipei, as the expected time is
    assert step_times(browser) == ["2026年11月22日 下午4:00", "2026年11月22日 下午4:00"]


async def test_a_status_page_without_a_chosen_zone_shows_every_time_in_the_browsers_zone_labelled_and_live(
    notifier: StartNotifier, browser: WebDriver, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    await publish(broker, f"{isolation}.", change("ord_no_tz", OrderStatus.DELAYED, 2, eta=T0 + timedelta(minutes=10)))
    await running.wait_until_consumed("ord_no_tz", 1)
    in_zone(browser, "Asia/Shanghai")  # paid at 08:00 UTC: 16:00 for the user in Shanghai, who chose no zone
    await asyncio.to_thread(browser.get, f"{status_link(running.url, 'ord_no_tz', 'u1')}&lang=en")
    await until(browser, lambda d: text_of(d, "live") == "Live")
    await settled(browser, step_times, ["Nov 22, 2026, 4:00\u202fPM UTC+8"] * 2)  # after the stream's first event
    assert "Expected by Nov 22, 2026, 4:10\u202fPM UTC+8" in text_of(browser, "steps")
    assert "Nov 22, 2026, 4:10\u202fPM UTC+8" in text_of(browser, "message")

    await publish(broker, f"{isolation}.", change("ord_no_tz", OrderStatus.CREDITED, 3))
    await until(browser, lambda d: d.execute_script("return document.body.dataset.final") == "true")
    assert step_times(browser) == ["Nov 22, 2026, 4:00\u202fPM UTC+8"] * 3  # the live update in the same zone


async def test_a_status_page_whose_browser_names_an_unknown_zone_shows_utc_labelled_and_stays_live(
    notifier: StartNotifier, browser: WebDriver, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    await publish(broker, f"{isolation}.", change("ord_odd_tz", OrderStatus.DELAYED, 2, eta=T0 + timedelta(minutes=10)))
    await running.wait_until_consumed("ord_odd_tz", 1)
    # a browser whose Intl answers a zone no database has (or a path): the page reads it as any browser's
    odd = (
        "const real = Intl.DateTimeFormat.prototype.resolvedOptions;"
        "Intl.DateTimeFormat.prototype.resolvedOptions = function () {"
        " return { ...real.call(this), timeZone: '../../../etc/passwd' }; };"
    )
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": odd})
    in_zone(browser, "Asia/Shanghai")
    await asyncio.to_thread(browser.get, f"{status_link(running.url, 'ord_odd_tz', 'u1')}&lang=en")
    await until(browser, lambda d: text_of(d, "live") == "Live")
    assert browser.execute_script("return Intl.DateTimeFormat().resolvedOptions().timeZone") == "../../../etc/passwd"
    assert "Expected by Nov 22, 2026, 8:10\u202fAM UTC" in text_of(browser, "steps")
    assert step_times(browser) == ["Nov 22, 2026, 8:00\u202fAM UTC"] * 2
    await publish(broker, f"{isolation}.", change("ord_odd_tz", OrderStatus.CREDITED, 3))
    await until(browser, lambda d: d.execute_script("return document.body.dataset.final") == "true")
    assert step_times(browser) == ["Nov 22, 2026, 8:00\u202fAM UTC"] * 3
