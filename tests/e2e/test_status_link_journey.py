"""A user's status link through the local stack's processes (payments signs it, the notifier checks it, both
on the stack's development secret): the link an order answers opens the user's page; the same token on
another order's page, or no token, gets 404."""

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import Broker
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.e2e


async def test_an_orders_status_url_opens_the_users_page_in_the_local_stack_and_no_other_order(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    async with running_stack(broker, database_url, isolation, tmp_path) as (stack, _):
        payments, notifier = stack.url("payments"), stack.url("notifier")
        order = {"amount": 600, "currency": "CNY", "channel": "alipay"}
        async with httpx.AsyncClient(timeout=30, headers=stack.headers) as platform:
            mine = (await platform.post(f"{payments}/v1/orders", json={"user_id": "u-mine", **order})).json()
            other = (await platform.post(f"{payments}/v1/orders", json={"user_id": "u-other", **order})).json()
        assert mine["status_url"].startswith(f"{notifier}/orders/{mine['order_id']}?token=")
        token = parse_qs(urlsplit(mine["status_url"]).query)["token"][0]
        async with httpx.AsyncClient(timeout=30) as browser:
            page = await browser.get(mine["status_url"])
            assert page.status_code == 200, page.text
            assert mine["order_id"] in page.text
            elsewhere = await browser.get(f"{notifier}/orders/{other['order_id']}", params={"token": token})
            assert elsewhere.status_code == 404
            assert (await browser.get(f"{notifier}/orders/{mine['order_id']}")).status_code == 404
