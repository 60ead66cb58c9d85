"""Fuzzing the provider callback over HTTP on the real PostgreSQL: any signature header and any correctly signed
body get one of the declared 4xx answers (or are applied), never a 5xx, and every callback is kept for audit."""

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from payments.bootstrap import build
from payments.config import Settings
from servicekit.signatures import sign
from tests.api_keys import bearer
from tests.conftest import Broker
from tests.openapi_fuzz import served
from tests.service_settings import settings_for

SECRET = "fuzz-secret"
FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
SIGNATURE_ERRORS = {"signature_missing", "signature_malformed", "signature_expired", "signature_from_future"}
BODY_ANSWERS = {
    200: {"applied", "duplicate", "ignored"},
    404: {"unknown_order"},
    409: {"already_paid"},
    422: {"invalid_callback", "amount_mismatch"},
}

FIELDS = ("order_id", "provider_txn_id", "status", "amount", "currency", "paid_at")

# Values that are almost right, plainly wrong, or hostile to the database (NUL, surrogates are not JSON).
texts = st.text(st.characters(codec="utf-8"), max_size=40)
anything: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), texts, st.lists(st.integers())
)


def callback_bodies(order_id: str) -> st.SearchStrategy[bytes]:
    fields = st.fixed_dictionaries(
        {
            "order_id": st.one_of(st.just(order_id), st.just("ord_unknown"), texts, anything),
            "provider_txn_id": st.one_of(st.just("tx-1"), st.just("tx-2"), texts, st.just("tx\x00"), anything),
            "status": st.one_of(st.sampled_from(["succeeded", "failed"]), texts, anything),
            "amount": st.one_of(st.just(600), st.integers(-5, 10**13), st.just("600"), st.just(600.0), anything),
            "currency": st.one_of(st.just("CNY"), st.just("USD"), st.just("cny"), texts, anything),
            "paid_at": st.one_of(st.just("2026-11-22T08:30:00+08:00"), st.just("2026-11-22T08:30:00"), texts, anything),
        },
        optional={"extra": anything},
    )
    # Some fields left out, too.
    json_bodies = st.tuples(fields, st.sets(st.sampled_from(FIELDS))).map(
        lambda pair: json.dumps({k: v for k, v in pair[0].items() if k not in pair[1]}).encode()
    )
    return st.one_of(json_bodies, st.binary(max_size=200), texts.map(str.encode))


@pytest.fixture
def payments(broker: Broker, database_url: str, isolation: str) -> Iterator[tuple[httpx.Client, Settings]]:
    settings = settings_for(
        Settings, broker, database_url, isolation, psp_secrets={"sim": [SECRET]}, environment="development"
    )

    headers: dict[str, str] = {}

    async def app() -> tuple[FastAPI, object]:
        infra, app = await build(settings)
        headers.update(await bearer(infra.keys))  # orders need a key; callbacks are checked by their signature
        return app, infra.close

    with served(app) as base_url, httpx.Client(base_url=base_url, timeout=10, headers=headers) as client:
        yield client, settings


def audited(settings: Settings) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.db_schema})
        try:
            return int(await conn.fetchval("SELECT count(*) FROM callbacks"))
        finally:
            await conn.close()

    return asyncio.run(count())


def new_order(client: httpx.Client) -> str:
    response = client.post("/v1/orders", json={"user_id": "u1", "amount": 600, "currency": "CNY", "channel": "card"})
    assert response.status_code == 201, response.text
    return str(response.json()["order_id"])


def test_any_signature_header_gets_a_clear_401_and_is_kept_for_audit(payments: tuple[httpx.Client, Settings]) -> None:
    client, settings = payments
    body = json.dumps({"order_id": new_order(client), "status": "succeeded"}).encode()
    sent = 0
    # Header values as HTTP carries them (visible latin-1 and spaces), near-misses of the real form included.
    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)
    near = st.builds(
        lambda t, sep, mac: f"t={t}{sep}v1={mac}",
        st.one_of(st.integers(-10, 10**13).map(str), header_text),
        st.sampled_from([",", ";", ", ", ""]),
        st.one_of(st.text("0123456789abcdef", min_size=60, max_size=70), header_text),
    )
    headers = st.one_of(near, header_text).map(lambda h: h.strip(" "))  # HTTP trims what surrounds a value

    @FUZZ
    @given(header=headers)
    def check(header: str) -> None:
        nonlocal sent
        response = client.post("/v1/psp/sim/callbacks", content=body, headers={"X-Signature": header.encode("latin-1")})
        sent += 1
        assert response.status_code == 401, response.text
        assert response.json()["error"] in SIGNATURE_ERRORS | {"signature_mismatch"}, response.text
        assert response.json()["detail"]

    check()
    assert audited(settings) == sent


def test_any_correctly_signed_body_gets_a_declared_answer_and_is_kept_for_audit(
    payments: tuple[httpx.Client, Settings],
) -> None:
    client, settings = payments
    order_id = new_order(client)
    sent = 0

    def valid(**changes: object) -> bytes:
        fields = {"order_id": order_id, "provider_txn_id": "tx-1", "status": "succeeded", "amount": 600}
        fields |= {"currency": "CNY", "paid_at": "2026-11-22T08:30:00+08:00"}
        return json.dumps(fields | changes).encode()

    @FUZZ
    @given(body=callback_bodies(order_id))
    @example(body=valid(provider_txn_id="tx\x00"))  # PostgreSQL text cannot hold NUL
    @example(body=valid(provider_txn_id="tx\udc80"))  # a lone surrogate: valid JSON, not UTF-8
    @example(body=valid(order_id=order_id + "\x00"))
    @example(body=valid(status="failed", provider_txn_id="tx-\x01"))
    def check(body: bytes) -> None:
        nonlocal sent
        response = client.post(
            "/v1/psp/sim/callbacks", content=body, headers={"X-Signature": sign(SECRET, body, int(time.time()))}
        )
        sent += 1
        assert response.status_code in BODY_ANSWERS, response.text
        answer = response.json()
        code = answer["result"] if response.status_code == 200 else answer["error"]
        assert code in BODY_ANSWERS[response.status_code], response.text
        assert answer["detail"]

    check()
    assert audited(settings) == sent
    order = client.get(f"/v1/orders/{order_id}").json()
    assert order["payment_status"] in {"pending", "succeeded", "failed"}
