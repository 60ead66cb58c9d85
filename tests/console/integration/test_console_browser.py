"""The support console in Debian's headless Chromium, on the whole local stack (a real broker and PostgreSQL):
sign in with a key made by `credited keys create`, find a user's orders, read one order's timeline across the
services, re-drive its credit and see the action recorded under the key's name (or refused 409 once payments
holds the order as credited), see a re-drive of an order held for review refused (409), work the cases queue,
and the same order page in Simplified Chinese; an auditor's read-only key sees the order and the queue with no
form to act. Screenshots go to artifacts/console/ (not committed)."""

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.conftest import ROOT, Broker
from tests.console.integration.support_stack import (
    REVIEW_ABOVE,
    console_process,
    credit_in_timeline,
    in_timeline,
    make_key,
    open_case,
    paid_order,
    support_cases_topic,
)
from tests.e2e.stack import running_stack
from tests.kafka_reader import eventually
from tests.notifier.integration.test_status_page_browser import CHROMEDRIVER, CHROMIUM, FLAGS, until

pytestmark = pytest.mark.e2e

ARTIFACTS = ROOT / "artifacts" / "console"
REVIEW_ENV = {"PAYMENTS_REVIEW_FIRST_TOPUP_ABOVE_MINOR": str(REVIEW_ABOVE), "PAYMENTS_REVIEW_EXPECTED_S": "600"}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = CHROMIUM
    flags = [f for f in FLAGS if not f.startswith("--window-size")]
    for flag in (*flags, "--window-size=1280,1600", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(1280, 3000)  # measured at a height the page cannot fill, then cut to the page
    height = driver.execute_script("return document.body.getBoundingClientRect().bottom")
    driver.set_window_size(1280, max(900, int(height) + 140))  # the window's frame takes part of its height
    driver.save_screenshot(str(ARTIFACTS / name))


def submit(driver: WebDriver, form_css: str, **fields: str) -> None:
    form = driver.find_element(By.CSS_SELECTOR, form_css)
    for name, value in fields.items():
        box = form.find_element(By.NAME, name)
        box.clear()
        box.send_keys(value)
    form.find_element(By.TAG_NAME, "button").click()


async def answered(driver: WebDriver) -> None:
    """Until the page after a form says it was done, or shows a refusal (whose text the assertion gives)."""
    await until(driver, lambda d: d.find_elements(By.ID, "done") or d.find_elements(By.ID, "error"))
    refusals = driver.find_elements(By.ID, "error")
    assert not refusals, refusals[0].text


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


async def test_support_staff_find_an_order_read_its_timeline_act_on_it_and_work_its_case_in_chromium(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path, browser: WebDriver
) -> None:
    prefix = f"{isolation}."
    await support_cases_topic(broker, prefix, partitions=3)
    async with running_stack(broker, database_url, isolation, tmp_path, extra_env=REVIEW_ENV) as (stack, _):
        alice = make_key(stack, "support-alice", "support:read", "support:act")
        auditor = make_key(stack, "support-auditor", "support:read")
        user = f"u-console-{isolation[-6:]}"
        async with httpx.AsyncClient(timeout=30, headers=stack.headers) as platform:
            held_order = await paid_order(platform, stack, user, REVIEW_ABOVE + 100)  # a first top-up: held
            credited_order = await paid_order(platform, stack, user, 600)
        async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {alice}"}) as support:
            await credit_in_timeline(support, stack, credited_order)
            await in_timeline(support, stack, held_order, "payments", "order_held")
            await open_case(broker, prefix, held_order, user)

            async def case_listed() -> bool:
                answer = await support.get(f"{stack.url('payments')}/v1/support/cases")
                return any(c["order_id"] == held_order for c in answer.json()["cases"])

            await eventually(case_listed, timeout_s=60)

        with console_process(stack.url("payments"), tmp_path / "console.log") as console:
            await asyncio.to_thread(browser.get, f"{console}/signin")
            submit(browser, "form[action='/signin']", key=alice)
            await until(browser, lambda d: d.current_url.endswith("/search"))

            await asyncio.to_thread(browser.get, f"{console}/search?by=user_id&q={user}")
            links = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "#orders a.order-link")}
            assert links == {credited_order, held_order}
            shot(browser, "search_en.png")

            browser.find_element(By.LINK_TEXT, credited_order).click()
            await until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline tr.entry"))
            entries = browser.find_elements(By.CSS_SELECTOR, "#timeline tr.entry")
            seen = [(r.get_attribute("data-source"), r.get_attribute("data-kind")) for r in entries]
            assert seen.index(("payments", "order_placed")) < seen.index(("ledger", "credit")), seen

            # A re-drive of the credited order: payments records it while it does not hold the order as credited
            # (the ledger credits at most once), and refuses it 409 already_credited once the reconciler's status has
            # reached it, which may come before or after this click. Either way the page says which.
            submit(browser, "form.act[data-action='redrive_credit']", reason="user reports no gems")
            await until(browser, lambda d: d.find_elements(By.ID, "done") or d.find_elements(By.ID, "error"))
            refused = browser.find_elements(By.ID, "error")
            redriven = not refused  # only then does the credited order's page list a recorded act
            if refused:
                assert refused[0].get_attribute("data-code") == "already_credited", refused[0].text
                assert browser.find_elements(By.CSS_SELECTOR, "#timeline tr.entry"), "the order under the refusal"
            else:
                recorded = browser.find_element(By.CSS_SELECTOR, "#actions tr.action[data-action='redrive_credit']")
                assert "support-alice" in recorded.text and "user reports no gems" in recorded.text
                assert browser.find_elements(By.CSS_SELECTOR, "#timeline tr.entry[data-source='support']")
            shot(browser, "order_en.png")

            await asyncio.to_thread(browser.get, f"{console}/orders/{held_order}")
            assert browser.find_elements(By.CSS_SELECTOR, "#timeline tr.entry[data-kind='order_held']")
            submit(browser, "form.act[data-action='redrive_credit']", reason="user says not credited")
            await until(browser, lambda d: d.find_elements(By.ID, "error"))
            refusal = browser.find_element(By.ID, "error")
            assert refusal.get_attribute("data-status") == "409", refusal.text
            assert refusal.get_attribute("data-code") == "under_review", refusal.text
            assert "Traceback" not in browser.page_source
            assert browser.find_elements(By.CSS_SELECTOR, "#timeline tr.entry"), "the order is shown under the refusal"
            shot(browser, "order_refused_en.png")

            await asyncio.to_thread(browser.get, f"{console}/cases")
            row = f"#cases tr.case[data-severity='warning'] a[href='/orders/{held_order}']"
            await until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row))
            shot(browser, "cases_en.png")
            case_row = browser.find_element(By.CSS_SELECTOR, row).find_element(By.XPATH, "./ancestor::tr")
            case_row.find_element(By.CSS_SELECTOR, "button.acknowledge").click()
            await answered(browser)
            await asyncio.to_thread(browser.get, f"{console}/orders/{held_order}")
            case = browser.find_element(By.CSS_SELECTOR, "#order-cases .case")
            assert "support-alice" in case.find_element(By.CSS_SELECTOR, ".owner").text
            assert case.find_elements(By.CSS_SELECTOR, ".acknowledged")

            browser.find_element(By.CSS_SELECTOR, "#languages a[data-lang='zh-CN']").click()
            await until(browser, lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN")
            assert browser.current_url.endswith(f"/orders/{held_order}")
            headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
            assert headings[:4] == ["时间线", "工单", "历史操作", "处理此订单"], headings
            assert "审核超时" in text(browser, "#order-cases")
            shot(browser, "order_zh-CN.png")
            await asyncio.to_thread(browser.get, f"{console}/orders/{credited_order}")
            if redriven:
                assert "重新发起到账" in text(browser, "#actions")
            shot(browser, "order_credited_zh-CN.png")

            # An auditor's key reads the same order and queue, with no form to act and a note why.
            browser.find_element(By.ID, "signout").click()
            await until(browser, lambda d: d.current_url.endswith("/signin"))
            submit(browser, "form[action='/signin']", key=auditor)
            await until(browser, lambda d: d.current_url.endswith("/search"))
            await asyncio.to_thread(browser.get, f"{console}/orders/{held_order}")
            await until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline tr.entry"))
            assert browser.find_elements(By.CSS_SELECTOR, "#order-cases .case")
            assert browser.find_elements(By.CSS_SELECTOR, "main form") == []
            assert browser.find_elements(By.ID, "act-needs-scope")
            shot(browser, "order_read_only_zh-CN.png")
            await asyncio.to_thread(browser.get, f"{console}/cases")
            await until(browser, lambda d: d.find_elements(By.ID, "act-needs-scope"))
            assert browser.find_elements(By.CSS_SELECTOR, "main form") == []
