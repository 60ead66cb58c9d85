"""Alipay documents send_pay_date as optional in alipay.trade.query's answer. A signed answer that says the trade
is paid (TRADE_SUCCESS or TRADE_FINISHED) without it is still a paid trade: its order must be credited by the
query path, not asked about for ever. The gateway here is a real HTTP server on loopback that answers as Alipay
does, its answers signed by the official SDK (python-alipay-sdk) holding Alipay's key."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl

import pytest
from aiohttp import web
from alipay import AliPay

from credited.providers.keys import LocalKeys, private_pem, public_pem
from payments.domain import PaymentState, PaymentStatus
from payments.ports import PaymentProvider
from payments.queries import QueryDeps, handle_due_queries
from tests.loopback_http import serving
from tests.payments.providers.conftest import alipay
from tests.payments.unit.fakes import FixedClock, InMemoryPayments, Store
from tests.payments.unit.test_queries import NOW, POLICY, Counts, FakeSchedule, due, order

ORDER = "ord_" + "0123456789abcdef" * 2


def alipay_signer(keys: LocalKeys) -> AliPay:
    """The official SDK holding Alipay's own key: what it signs is signed as Alipay signs its answers."""
    return AliPay(
        appid=keys.alipay_app_id,
        app_private_key_string=private_pem(keys.alipay_key),
        alipay_public_key_string=public_pem(keys.alipay_key.public_key()),
    )


def alipay_client(keys: LocalKeys) -> AliPay:
    """The official SDK as the app: it accepts an answer only if Alipay's signature over it holds."""
    return AliPay(
        appid=keys.alipay_app_id,
        app_private_key_string=private_pem(keys.alipay_app_key),
        alipay_public_key_string=public_pem(keys.alipay_key.public_key()),
    )


@dataclass
class PaidGateway:
    """alipay.trade.query answered "paid" with trade_no and total_amount, and no send_pay_date."""

    keys: LocalKeys
    trade_status: str
    total_amount: str
    answers: list[str]

    async def gateway(self, request: web.Request) -> web.Response:
        params = dict(parse_qsl((await request.read()).decode()))
        assert params["method"] == "alipay.trade.query"
        biz = json.loads(params["biz_content"])
        part = json.dumps(
            {
                "code": "10000",
                "msg": "Success",
                "trade_no": "2026112222001404000000000001",
                "out_trade_no": biz["out_trade_no"],
                "buyer_logon_id": "159****5620",
                "trade_status": self.trade_status,
                "total_amount": self.total_amount,
                "buyer_pay_amount": self.total_amount,
                "receipt_amount": self.total_amount,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        text = f'{{"alipay_trade_query_response":{part},"sign":"{alipay_signer(self.keys)._sign(part)}"}}'
        self.answers.append(text)
        return web.Response(text=text, content_type="application/json", charset="utf-8")


@pytest.fixture(params=["TRADE_SUCCESS", "TRADE_FINISHED"])
async def paid_gateway(request: pytest.FixtureRequest, local_keys: LocalKeys) -> AsyncIterator[tuple[PaidGateway, str]]:
    server = PaidGateway(local_keys, request.param, "6.00", [])
    app = web.Application()
    app.router.add_post("/gateway.do", server.gateway)
    async with serving(app) as port:
        yield server, f"http://127.0.0.1:{port}"


async def test_a_signed_paid_query_answer_without_send_pay_date_reads_paid(
    paid_gateway: tuple[PaidGateway, str], local_keys: LocalKeys
) -> None:
    server, url = paid_gateway
    ours = alipay(local_keys, url)
    try:
        answer = await ours.query_payment(ORDER)
    finally:
        await ours.aclose()
    # The official SDK, as the app, takes the very answer we got as Alipay's, signature and all.
    sdk_read = alipay_client(local_keys)._verify_and_return_sync_response(
        server.answers[-1], "alipay_trade_query_response"
    )
    assert sdk_read["trade_status"] == server.trade_status and "send_pay_date" not in sdk_read
    assert (answer.state, answer.amount, answer.currency, answer.provider_txn_id) == (
        PaymentState.PAID,
        600,
        "CNY",
        "2026112222001404000000000001",
    ), answer


@dataclass
class OneProvider:
    provider: PaymentProvider

    def get(self, name: str) -> PaymentProvider | None:
        return self.provider if name == self.provider.name else None

    @property
    def names(self) -> frozenset[str]:
        return frozenset({self.provider.name})


async def test_an_order_paid_at_alipay_is_credited_by_its_query_when_the_answer_has_no_send_pay_date(
    paid_gateway: tuple[PaidGateway, str], local_keys: LocalKeys
) -> None:
    _, url = paid_gateway
    ours = alipay(local_keys, url)
    placed = order(ORDER)
    store, schedule = Store(orders={ORDER: placed}), FakeSchedule([due(placed, expired=True, attempts=7)])
    deps = QueryDeps(
        schedule, OneProvider(ours), lambda: InMemoryPayments(store), FixedClock(NOW.timestamp()), POLICY, Counts()
    )
    try:
        assert await handle_due_queries(deps, 10) == 1
    finally:
        await ours.aclose()
    credited = store.orders[ORDER]
    assert credited.payment_status is PaymentStatus.SUCCEEDED, (
        f"the order paid at Alipay is {credited.payment_status}; its query was rescheduled: {schedule.rescheduled}"
    )
