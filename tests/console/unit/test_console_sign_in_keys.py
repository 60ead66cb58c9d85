"""What the console says about a pasted key, or a key cookie, that cannot be an API key: a line break, a tab, a space
or another character no Authorization header carries, nothing at all, or kilobytes of text. Each is told plainly on
the sign-in page, in the person's language, and none is sent to payments (a header that cannot carry it made the
console say payments was unreachable, and a cookie edited by hand made a 500)."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from credited.console.app import KEY_COOKIE, build_app
from credited.console.wording import WORDS
from tests.console.unit.fake_payments import KEY, FakePayments

CONSOLE = "http://testserver"
SAME = {"Origin": CONSOLE}
LANGUAGES = {"en": "en", "zh-CN": "zh-CN,zh;q=0.9"}
"""Each of the console's languages and an Accept-Language that asks for it."""

NOT_KEYS = {
    "key_malformed": (
        f"{KEY[:6]}\n{KEY[6:]}",
        f"{KEY[:6]}\r\n{KEY[6:]}",
        f"{KEY[:6]}\t{KEY[6:]}",
        f"{KEY[:6]}\x00{KEY[6:]}",
        f"{KEY[:6]}\x7f{KEY[6:]}",
        f"{KEY[:6]} {KEY[6:]}",
        f"Bearer {KEY}",
        f"{KEY}\u2026",
        f"{KEY[:6]}\u00e9{KEY[6:]}",
    ),
    "key_empty": ("", "   ", "\n\t "),
    "key_too_long": ("ck_live_" + "A" * 10_000,),
}
"""Keys that cannot be keys, by the word the console answers them with."""


@pytest.fixture
def payments() -> FakePayments:
    return FakePayments()


@pytest.fixture
def console(payments: FakePayments) -> Iterator[TestClient]:
    app = build_app("http://payments.test", transport=payments.transport())
    with TestClient(app, base_url=CONSOLE, raise_server_exceptions=False) as client:
        yield client


def says(page: str, locale: str, word: str) -> bool:
    return str(escape(WORDS[locale][word])) in page


def test_a_pasted_key_that_cannot_be_a_key_is_told_on_the_sign_in_page_in_each_language_without_asking_payments(
    console: TestClient, payments: FakePayments
) -> None:
    for word, keys in NOT_KEYS.items():
        for key in keys:
            for locale, accept in LANGUAGES.items():
                headers = {**SAME, "Accept-Language": accept}
                response = console.post("/signin", data={"key": key}, headers=headers, follow_redirects=False)
                assert payments.requests == [], f"payments was asked about {key[:20]!r}"
                assert response.status_code == 401, (key[:20], response.text[:200])
                assert f'data-status="401" data-code="{word}"' in response.text, key[:20]
                assert 'form method="post" action="/signin"' in response.text
                assert "set-cookie" not in response.headers
                assert says(response.text, locale, word), (key[:20], locale)


def test_a_key_with_a_line_break_pasted_around_it_still_signs_in(console: TestClient, payments: FakePayments) -> None:
    response = console.post("/signin", data={"key": f"  {KEY}\r\n"}, headers=SAME, follow_redirects=False)
    assert response.status_code == 303 and response.headers["set-cookie"].startswith(f"{KEY_COOKIE}={KEY};")
    assert payments.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_a_sign_in_form_sent_without_the_key_field_is_asked_again_not_answered_in_json(console: TestClient) -> None:
    response = console.post("/signin", data={}, headers=SAME, follow_redirects=False)
    assert response.status_code == 401 and 'data-code="key_empty"' in response.text
    assert response.headers["content-type"].startswith("text/html")


TAMPERED = (
    "ck_live_\xe9\xe9",  # latin-1 bytes in the Cookie header
    '"ck_live_a\\012b"',  # a quoted cookie whose octal escape is a line break
    '"ck_live_a b"',
    '"ck_live_a\\011b"',
    "x" * 10_000,
)
"""Key cookie values as someone might write them by hand (the console never sets these)."""


@pytest.mark.parametrize("value", TAMPERED, ids=["latin-1", "newline", "space", "tab", "10kB"])
def test_a_key_cookie_edited_by_hand_leads_to_the_sign_in_page_and_is_cleared_never_a_500(
    console: TestClient, payments: FakePayments, value: str
) -> None:
    cookie = f"{KEY_COOKIE}={value}".encode("latin-1")
    visits = (
        ("GET", "/cases", {}),
        ("GET", "/search?by=user_id&q=u-7", {}),
        ("GET", "/orders/ord_1", {}),
        ("GET", "/", {}),
        ("POST", "/orders/ord_1/actions", {"action": "refund", "reason": "asked"}),
        ("POST", "/cases/c-warn/acknowledge", {"next": "/cases"}),
    )
    for locale, accept in LANGUAGES.items():
        for method, path, form in visits:
            headers = {**SAME, "Accept-Language": accept, "Cookie": cookie}  # type: ignore[dict-item]
            response = console.request(method, path, data=form or None, headers=headers, follow_redirects=False)
            assert payments.requests == [], f"payments was asked on {method} {path}"
            assert response.status_code == 401, (method, path, response.status_code)
            assert 'data-status="401" data-code="key_cookie_unreadable"' in response.text, (method, path)
            assert 'form method="post" action="/signin"' in response.text
            assert 'id="signout"' not in response.text
            assert says(response.text, locale, "key_cookie_unreadable"), (path, locale)
            cleared = response.headers["set-cookie"]
            assert cleared.startswith(f'{KEY_COOKIE}=""') and "Max-Age=0" in cleared, cleared


def test_signing_in_again_over_an_unreadable_key_cookie_works(console: TestClient, payments: FakePayments) -> None:
    cookie = f'{KEY_COOKIE}="ck_live_a\\012b"'
    response = console.post("/signin", data={"key": KEY}, headers={**SAME, "Cookie": cookie}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["set-cookie"].startswith(f"{KEY_COOKIE}={KEY};")
    assert console.get("/signin", headers={"Cookie": cookie}).status_code == 401
    signed_out = console.post("/signout", headers={**SAME, "Cookie": cookie}, follow_redirects=False)
    assert signed_out.status_code == 303 and signed_out.headers["location"] == "/signin"
