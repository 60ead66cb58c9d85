"""The console's pages against a fake of payments' support API: the key travels in an HttpOnly, SameSite=Strict
cookie and reaches payments as a bearer key; forms from elsewhere are refused; refusals are shown plainly."""

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from credited.console.app import KEY_COOKIE, build_app, local_path
from tests.console.unit.fake_payments import KEY, FakePayments

CONSOLE = "http://testserver"
SAME = {"Origin": CONSOLE}


@pytest.fixture
def payments() -> FakePayments:
    return FakePayments()


@pytest.fixture
def console(payments: FakePayments) -> Iterator[TestClient]:
    with TestClient(build_app("http://payments.test", transport=payments.transport()), base_url=CONSOLE) as client:
        yield client


def signed_in(console: TestClient) -> TestClient:
    response = console.post("/signin", data={"key": KEY}, headers=SAME, follow_redirects=False)
    assert response.status_code == 303, response.text
    return console


def test_signing_in_keeps_the_key_in_an_httponly_strict_cookie_and_sends_it_to_payments_as_bearer(
    console: TestClient, payments: FakePayments
) -> None:
    response = console.post("/signin", data={"key": KEY}, headers=SAME, follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert response.headers["location"] == "/search"
    assert cookie.startswith(f"{KEY_COOKIE}={KEY};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    console.get("/search", params={"by": "user_id", "q": "u-7"})
    assert payments.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_a_key_payments_refuses_is_not_kept_and_the_refusal_is_shown(console: TestClient) -> None:
    response = console.post("/signin", data={"key": "sk_wrong"}, headers=SAME, follow_redirects=False)
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    assert 'id="error" data-status="401" data-code="unauthenticated"' in response.text
    assert "Traceback" not in response.text


def test_a_form_posted_from_another_site_is_refused_before_payments_is_asked(
    console: TestClient, payments: FakePayments
) -> None:
    signed_in(console)
    asked = len(payments.requests)
    for headers in ({"Origin": "https://evil.example"}, {}, {"Origin": "null"}):
        form = {"action": "refund", "reason": "customer asked"}
        response = console.post("/orders/ord_1/actions", data=form, headers=headers, follow_redirects=False)
        assert response.status_code == 403, headers
        assert "bad_origin" in response.text
    assert len(payments.requests) == asked


def test_searching_by_user_id_lists_the_users_orders_with_a_link_to_each(console: TestClient) -> None:
    page = signed_in(console).get("/search", params={"by": "user_id", "q": "u-7"}).text
    assert 'href="/orders/ord_1"' in page
    assert "CN¥648.00" in page
    assert "No order matches." in console.get("/search", params={"by": "user_id", "q": "u-none"}).text


def test_the_order_page_shows_the_timeline_in_time_order_with_each_sources_badge(console: TestClient) -> None:
    page = signed_in(console).get("/orders/ord_1").text
    rows = re.findall(r'class="entry" data-source="(\w+)" data-kind="(\w+)"', page)
    assert rows == [("payments", "order_created"), ("ledger", "credit_rejected"), ("reconciler", "escalated")]
    assert 'class="badge source-ledger"' in page
    assert set(re.findall(r'class="act" data-action="(\w+)"', page)) == {
        "redrive_credit",
        "refund",
        "grant_compensation",
        "resend_notification",
    }


def test_the_order_page_is_in_chinese_for_a_chinese_browser_and_after_the_switch(console: TestClient) -> None:
    signed_in(console)
    page = console.get("/orders/ord_1", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).text
    assert '<html lang="zh-CN">' in page and "时间线" in page and "重新发起到账" in page and "¥648.00" in page
    switched = console.get("/lang/zh-CN", params={"next": "/orders/ord_1"}, follow_redirects=False)
    assert switched.headers["location"] == "/orders/ord_1"
    assert "时间线" in console.get("/orders/ord_1", headers={"Accept-Language": "en"}).text


def test_an_action_is_sent_with_its_reason_and_the_order_page_says_it_was_recorded(
    console: TestClient, payments: FakePayments
) -> None:
    signed_in(console)
    form = {"action": "grant_compensation", "reason": "late credit", "amount": "500", "idempotency_key": "k-1"}
    response = console.post("/orders/ord_1/actions", data=form, headers=SAME)
    sent = next(r for r in payments.requests if r.method == "POST" and r.url.path.endswith("/actions"))
    assert sent.headers["idempotency-key"] == "k-1"
    assert sent.content == b'{"action":"grant_compensation","reason":"late credit","amount":500}'
    assert response.status_code == 200 and 'id="done"' in response.text and "Action recorded" in response.text


def test_a_refused_action_shows_paymentss_code_and_detail_on_the_order_page_without_a_trace(
    console: TestClient, payments: FakePayments
) -> None:
    signed_in(console)
    payments.refuse = (409, "already_credited", "the order was credited at 08:00")
    response = console.post("/orders/ord_1/actions", data={"action": "refund", "reason": "asked"}, headers=SAME)
    assert response.status_code == 409
    assert 'data-code="already_credited"' in response.text and "the order was credited at 08:00" in response.text
    assert 'id="timeline"' in response.text  # the order is still shown under the refusal
    assert "Traceback" not in response.text


def test_an_act_whose_answer_was_lost_is_shown_again_with_its_key_so_sending_it_again_does_it_once(
    console: TestClient, payments: FakePayments
) -> None:
    """The act may have been done: a new key would make the same form a second compensation."""
    signed_in(console)
    payments.lose_answers = True
    form = {
        "action": "grant_compensation",
        "reason": "late",
        "amount": "500",
        "idempotency_key": "k-7-grant_compensation",
    }
    response = console.post("/orders/ord_1/actions", data=form, headers=SAME)
    assert response.status_code == 502 and 'id="timeline"' in response.text
    keys = re.findall(r'name="idempotency_key" value="([^"]+)"', response.text)
    assert "k-7-grant_compensation" in keys, keys
    payments.lose_answers = False
    again = console.post(
        "/orders/ord_1/actions",
        data={**form, "idempotency_key": keys[keys.index(form["idempotency_key"])]},
        headers=SAME,
    )
    assert again.status_code == 200 and "Action recorded" in again.text
    sent = [
        r.headers["idempotency-key"]
        for r in payments.requests
        if r.method == "POST" and r.url.path.endswith("/actions")
    ]
    assert sent == ["k-7-grant_compensation", "k-7-grant_compensation"]


def test_a_refusal_shows_the_order_with_a_new_key(console: TestClient, payments: FakePayments) -> None:
    """A refused act was not done: its key (payments may hold it as refused) is not offered again."""
    signed_in(console)
    payments.refuse = (409, "already_credited", "the order was credited at 08:00")
    form = {"action": "refund", "reason": "asked", "idempotency_key": "k-8-refund"}
    response = console.post("/orders/ord_1/actions", data=form, headers=SAME)
    assert response.status_code == 409
    assert "k-8-refund" not in response.text


def test_a_compensation_without_a_whole_positive_amount_is_refused_by_the_console(
    console: TestClient, payments: FakePayments
) -> None:
    signed_in(console)
    for amount in ("", "-5", "1.5", "0", "²", "5²", "9" * 5000):  # str.isdigit() says yes to "²"; int() cannot read it
        form = {"action": "grant_compensation", "reason": "late", "amount": amount}
        response = console.post("/orders/ord_1/actions", data=form, headers=SAME)
        assert response.status_code == 422 and "bad_amount" in response.text, amount[:8]
    assert not [r for r in payments.requests if r.method == "POST" and r.url.path.endswith("/actions")]


def test_signing_in_with_a_key_that_has_a_character_no_key_has_is_refused_401_without_asking_payments(
    console: TestClient, payments: FakePayments
) -> None:
    for key in ("ck_live_Ab3dE9\u2026", "ck_live_Ab3dE9\u00ff"):  # a pasted `credited keys list` prefix ends in "…"
        response = console.post("/signin", data={"key": key}, headers=SAME, follow_redirects=False)
        assert response.status_code == 401 and "set-cookie" not in response.headers, key
        assert "internal_error" not in response.text
    assert payments.requests == []


def test_the_cases_queue_lists_by_severity_then_oldest_first_with_ack_buttons(console: TestClient) -> None:
    page = signed_in(console).get("/cases").text
    assert re.findall(r'class="case" data-case-id="([\w-]+)"', page) == ["c-crit-old", "c-crit-new", "c-warn"]
    assert page.count('class="acknowledge"') == 3


def test_acknowledging_a_case_goes_back_to_where_it_was_asked(console: TestClient, payments: FakePayments) -> None:
    signed_in(console)
    response = console.post("/cases/c-warn/acknowledge", data={"next": "/cases"}, headers=SAME, follow_redirects=False)
    assert response.headers["location"] == "/cases?done=case_updated"
    assert payments.requests[-1].url.path == "/v1/support/cases/c-warn/acknowledge"
    assert payments.requests[-1].content == b'{"note":null}'


def test_pages_without_a_key_ask_to_sign_in_and_payments_unreachable_is_said_plainly(payments: FakePayments) -> None:
    with TestClient(build_app("http://127.0.0.1:9"), base_url=CONSOLE) as console:
        page = console.get("/cases")
        assert page.status_code == 401 and "Sign in first." in page.text
        console.cookies.set(KEY_COOKIE, KEY)
        page = console.get("/orders/ord_1")
        assert page.status_code == 502 and "Payments cannot be reached" in page.text
        assert "Traceback" not in page.text


def test_redirects_stay_on_the_console() -> None:
    assert local_path("/orders/ord_1") == "/orders/ord_1"
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil", None, ""):
        assert local_path(target) == "/search"


def test_the_order_page_shows_each_cases_history_and_escapes_what_the_api_says(
    console: TestClient, payments: FakePayments
) -> None:
    payments.timeline[0]["summary"] = "<script>alert(1)</script>"
    page = signed_in(console).get("/orders/ord_1").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'class="history"' in page and "&lt;b&gt;opened&lt;/b&gt;" in page


@pytest.mark.parametrize(
    ("asked", "sent"), [("ord_1%23", "/v1/support/orders/ord_1%23"), ("ord_1%3Fx", "/v1/support/orders/ord_1%3Fx")]
)
def test_an_id_from_the_consoles_url_is_one_path_segment_of_the_request_to_payments(
    console: TestClient, payments: FakePayments, asked: str, sent: str
) -> None:
    """ "ord_1#" written raw asked payments for ord_1 (the rest a fragment), "ord_1?x" for ord_1 with a query."""
    signed_in(console).get(f"/orders/{asked}")
    assert [r.url.raw_path.decode() for r in payments.requests if r.url.path.startswith("/v1/support/orders/")] == [
        sent
    ]


def test_a_read_only_key_sees_the_order_and_its_cases_without_any_form_to_act_and_a_note_why(
    console: TestClient, payments: FakePayments
) -> None:
    payments.scopes = ("support:read",)
    page = signed_in(console).get("/orders/ord_1").text
    assert 'id="timeline"' in page and 'data-case-id="c-warn"' in page  # the same information as an actor sees
    assert re.findall(r'<form method="post" action="(/orders|/cases)/', page) == []
    assert 'id="act-needs-scope"' in page and "support:act" in page
    queue = console.get("/cases").text
    assert re.findall(r'class="case" data-case-id="([\w-]+)"', queue) == ["c-crit-old", "c-crit-new", "c-warn"]
    assert 'class="acknowledge"' not in queue and 'action="/cases/' not in queue
    assert 'id="act-needs-scope"' in queue


def test_an_act_sent_anyway_with_a_read_only_key_is_still_refused_by_payments_and_shown(
    console: TestClient, payments: FakePayments
) -> None:
    payments.scopes = ("support:read",)
    signed_in(console)
    response = console.post("/orders/ord_1/actions", data={"action": "refund", "reason": "asked"}, headers=SAME)
    assert response.status_code == 403 and 'data-code="insufficient_scope"' in response.text
    assert any(r.method == "POST" and r.url.path == "/v1/support/orders/ord_1/actions" for r in payments.requests)


def test_a_key_that_can_act_sees_every_form_to_act_and_no_note(console: TestClient) -> None:
    page = signed_in(console).get("/orders/ord_1").text
    assert len(re.findall(r'class="act" data-action=', page)) == 4
    assert 'action="/cases/c-warn/resolve"' in page
    assert 'id="act-needs-scope"' not in page


def test_a_payments_that_cannot_tell_the_keys_scopes_leaves_the_forms_and_the_decision_to_itself(
    console: TestClient, payments: FakePayments
) -> None:
    payments.scopes = None
    page = signed_in(console).get("/orders/ord_1")
    assert page.status_code == 200 and len(re.findall(r'class="act" data-action=', page.text)) == 4
    assert console.get("/cases").text.count('class="acknowledge"') == 3


def test_a_page_refused_before_the_keys_scopes_are_known_says_nothing_about_them(payments: FakePayments) -> None:
    with TestClient(build_app("http://payments.test", transport=payments.transport()), base_url=CONSOLE) as console:
        page = console.get("/cases")
        assert page.status_code == 401 and 'id="act-needs-scope"' not in page.text
