"""Our signing checked by code no one here wrote: the official SDKs (wechatpayv3, python-alipay-sdk)
compute the same request signatures as our adapters, and, used as clients, accept the local provider's
signed answers while the local provider accepts their signed requests."""

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl

import httpx
from alipay import AliPay
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3 import utils as wechatpay_utils

from credited.providers import wechatpay as local_wechatpay
from credited.providers.keys import LocalKeys, private_pem, public_pem
from credited.providers.server import LocalProvider
from payments.adapters.providers.alipay import AlipayProvider
from payments.adapters.providers.registry import alipay_config, wechatpay_config
from payments.adapters.providers.transport import HttpxWire
from payments.adapters.providers.wechatpay import WeChatPayProvider
from payments.domain import RefundRequest
from tests.payments.providers.conftest import platform_cert_dir, settings_for

ORDER = "ord_" + "0123456789abcdef" * 2


class Captured:
    """An httpx transport that keeps the requests and answers 503, so nothing is believed."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(503)


def wechat_sdk(keys: LocalKeys, tmp_path: Path, base_url: str = "") -> WeChatPay:
    sdk = WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=keys.mchid,
        private_key=private_pem(keys.wechat_merchant_key),
        cert_serial_no=f"{keys.merchant_certificate.serial_number:X}",
        appid=keys.wechat_appid,
        apiv3_key=keys.apiv3_key,
        cert_dir=platform_cert_dir(keys, tmp_path),
        timeout=(2, 5),
    )
    if base_url:
        sdk._core._gate_way = base_url  # the local provider instead of WeChat Pay's API
    return sdk


def alipay_sdk(keys: LocalKeys, gateway: str = "") -> AliPay:
    sdk = AliPay(
        appid=keys.alipay_app_id,
        app_private_key_string=private_pem(keys.alipay_app_key),
        alipay_public_key_string=public_pem(keys.alipay_key.public_key()),
    )
    if gateway:
        sdk._gateway = gateway
    return sdk


async def test_our_wechat_pay_authorization_is_the_one_the_sdk_computes(local_keys: LocalKeys, tmp_path: Path) -> None:
    captured = Captured()
    config = wechatpay_config(settings_for(local_keys))
    assert config is not None
    ours = WeChatPayProvider(config, http=HttpxWire(httpx.AsyncClient(transport=httpx.MockTransport(captured.handle))))
    await ours.query_payment(ORDER)
    await ours.refund(RefundRequest(ORDER, "refund-1", "4200000000000000", 600, 600, "CNY", "not credited"))
    await ours.close(ORDER)
    sdk = wechat_sdk(local_keys, tmp_path)
    assert len(captured.requests) == 3
    for request in captured.requests:
        fields = dict(re.findall(r'(\w+)="([^"]*)"', request.headers["authorization"]))
        path = request.url.raw_path.decode()
        body = request.content.decode()
        # The SDK signs with the clock's time and a nonce we hand it: give it ours.
        with mock.patch.object(wechatpay_utils.time, "time", return_value=int(fields["timestamp"])):
            theirs = wechatpay_utils.build_authorization(
                path,
                request.method,
                local_keys.mchid,
                fields["serial_no"],
                sdk._core._private_key,
                body or None,
                nonce_str=fields["nonce_str"],
            )
        assert request.headers["authorization"] == theirs, f"{request.method} {path}"


async def test_our_alipay_request_sign_is_the_one_the_sdk_computes(local_keys: LocalKeys) -> None:
    captured = Captured()
    config = alipay_config(settings_for(local_keys))
    assert config is not None
    ours = AlipayProvider(config, http=HttpxWire(httpx.AsyncClient(transport=httpx.MockTransport(captured.handle))))
    await ours.query_payment(ORDER)
    await ours.refund(RefundRequest(ORDER, "refund-1", "2024013122001", 1234, 1234, "CNY", "not credited"))
    await ours.query_refund(ORDER, "refund-1")
    await ours.close(ORDER)
    assert [dict(parse_qsl(r.content.decode()))["method"] for r in captured.requests] == [
        "alipay.trade.query",
        "alipay.trade.refund",
        "alipay.trade.fastpay.refund.query",
        "alipay.trade.close",
    ]
    sdk = alipay_sdk(local_keys)
    for request in captured.requests:
        params = dict(parse_qsl(request.content.decode()))
        sign = params.pop("sign")
        signed = dict(parse_qsl(sdk.sign_data(dict(params))))  # the SDK orders and signs them itself
        assert signed["sign"] == sign, params["method"]
    refund_biz = json.loads(dict(parse_qsl(captured.requests[1].content.decode()))["biz_content"])
    assert (refund_biz["refund_amount"], refund_biz["out_request_no"]) == ("12.34", "refund-1")


async def test_the_wechat_pay_sdk_as_a_client_and_the_local_provider_accept_each_other(
    provider: LocalProvider, local_keys: LocalKeys, tmp_path: Path
) -> None:
    trade_no = local_wechatpay.trade_no_for(ORDER)
    provider.pay("wechatpay", trade_no, 600)
    sdk = wechat_sdk(local_keys, tmp_path, provider.url)
    # The SDK checks every 2xx answer's signature and raises if one fails.
    code, text = await asyncio.to_thread(sdk.query, out_trade_no=trade_no)
    assert code == 200 and json.loads(text)["trade_state"] == "SUCCESS"
    refund: dict[str, Any] = {"refund": 600, "total": 600, "currency": "CNY"}
    code, text = await asyncio.to_thread(sdk.refund, out_refund_no="refund-1", amount=refund, out_trade_no=trade_no)
    assert code == 200 and json.loads(text)["status"] == "SUCCESS"
    code, _ = await asyncio.to_thread(sdk.query_refund, out_refund_no="refund-1")
    assert code == 200
    provider.open("wechatpay", "c" * 32, 600)
    code, _ = await asyncio.to_thread(sdk.close, out_trade_no="c" * 32)
    assert code == 204


async def test_the_alipay_sdk_as_a_client_and_the_local_provider_accept_each_other(
    provider: LocalProvider, local_keys: LocalKeys
) -> None:
    provider.pay("alipay", ORDER, 1234)
    sdk = alipay_sdk(local_keys, f"{provider.url}/gateway.do")
    # The SDK raises unless the answer's signature holds.
    answer = await asyncio.to_thread(sdk.api_alipay_trade_query, out_trade_no=ORDER)
    assert (answer["trade_status"], answer["total_amount"]) == ("TRADE_SUCCESS", "12.34")
    refund = await asyncio.to_thread(
        sdk.api_alipay_trade_refund, refund_amount="12.34", out_trade_no=ORDER, out_request_no="refund-1"
    )
    assert refund["fund_change"] == "Y"
    found = await asyncio.to_thread(
        sdk.api_alipay_trade_fastpay_refund_query, out_request_no="refund-1", out_trade_no=ORDER
    )
    assert found["refund_status"] == "REFUND_SUCCESS"
    provider.open("alipay", "ord_other", 600)
    closed = await asyncio.to_thread(sdk.api_alipay_trade_close, out_trade_no="ord_other")
    assert closed["code"] == "10000"
