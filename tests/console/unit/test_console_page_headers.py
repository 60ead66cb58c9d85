"""The support console's pages against a fake of payments' support API: what a browser is told about framing,
caching and scripts on every page (a refusal and a failure too), and that a link cannot put its own words in the
console's "done" box."""

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from credited.console.app import build_app
from tests.console.unit.fake_payments import KEY, FakePayments

CONSOLE = "http://testserver"
SAME = {"Origin": CONSOLE}


@pytest.fixture
def console() -> Iterator[TestClient]:
    app = build_app("http://payments.test", transport=FakePayments().transport())
    with TestClient(app, base_url=CONSOLE) as client:
        yield client


def signed_in(console: TestClient) -> TestClient:
    response = console.post("/signin", data={"key": KEY}, headers=SAME, follow_redirects=False)
    assert response.status_code == 303, response.text
    return console


def assert_guarded(response: httpx.Response) -> None:
    assert response.headers.get("x-frame-options") == "DENY", dict(response.headers)
    assert response.headers.get("cache-control") == "no-store", dict(response.headers)


def test_every_console_page_sends_a_content_security_policy_that_runs_no_script(console: TestClient) -> None:
    for path in ("/signin", "/search?by=order_id&q=ord_1", "/orders/ord_1", "/cases"):
        response = signed_in(console).get(path)
        policy = response.headers.get("content-security-policy", "")
        assert "script-src 'none'" in policy or "default-src 'none'" in policy, (path, dict(response.headers))
        assert "frame-ancestors 'none'" in policy, (path, policy)


def test_a_cross_site_form_refusal_is_sent_with_the_consoles_no_framing_and_no_store_headers(
    console: TestClient,
) -> None:
    signed_in(console)
    form = {"action": "refund", "reason": "customer asked"}
    response = console.post("/orders/ord_1/actions", data=form, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert_guarded(response)


def test_a_failure_page_is_sent_with_the_consoles_no_framing_and_no_store_headers() -> None:
    def not_json(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>a proxy's page, not payments</html>")

    app = build_app("http://payments.test", transport=httpx.MockTransport(not_json))
    with TestClient(app, base_url=CONSOLE, raise_server_exceptions=False) as console:
        console.cookies.set("credited_console_key", KEY)
        response = console.get("/orders/ord_1")
    assert response.status_code == 500 and "internal_error" in response.text
    assert_guarded(response)


def test_words_a_link_carries_in_done_are_not_shown_as_the_consoles_own_confirmation(console: TestClient) -> None:
    spoof = "Refund approved: wire the refund to account 12345 now"
    page = signed_in(console).get("/orders/ord_1", params={"done": spoof}).text
    assert spoof not in page
    page = console.get("/cases", params={"done": spoof}).text
    assert spoof not in page
