"""A provider's signed answer to a refund of another order, replayed as the answer to ours (by whoever stands
between us and the provider), is believed for nothing, as a payment query's answer about another order is not."""

from collections.abc import Mapping

import pytest

from credited.providers import wechatpay as local_wechatpay
from credited.providers.keys import LocalKeys
from credited.providers.server import LocalProvider
from payments.adapters.providers.alipay import AlipayProvider
from payments.adapters.providers.registry import alipay_config, wechatpay_config
from payments.adapters.providers.transport import AiohttpWire, Reply
from payments.adapters.providers.wechatpay import WeChatPayProvider
from payments.domain import RefundRequest
from tests.payments.providers.conftest import settings_for


class Replaying:
    """A wire that passes requests through and records their answers, or, when `replay` is set, answers
    every request with that recorded (provider-signed) answer instead: a MITM replaying a signed reply."""

    def __init__(self, timeout_s: float = 2.0) -> None:
        self._real = AiohttpWire(timeout_s=timeout_s)
        self.recorded: list[Reply] = []
        self.replay: Reply | None = None

    async def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        if self.replay is not None:
            return self.replay
        reply = await self._real.request(method, url, body, headers)
        self.recorded.append(reply)
        return reply

    async def aclose(self) -> None:
        await self._real.aclose()


def order(n: int) -> str:
    return f"ord_{n:032x}"


def trade_no(name: str, order_id: str) -> str:
    return local_wechatpay.trade_no_for(order_id) if name == "wechatpay" else order_id


def adapter(name: str, keys: LocalKeys, url: str, wire: Replaying) -> WeChatPayProvider | AlipayProvider:
    settings = settings_for(keys, url)
    if name == "wechatpay":
        config = wechatpay_config(settings)
        assert config is not None
        return WeChatPayProvider(config, http=wire)
    config2 = alipay_config(settings)
    assert config2 is not None
    return AlipayProvider(config2, http=wire)


@pytest.mark.parametrize("name", ["wechatpay", "alipay"])
@pytest.mark.parametrize("call", ["refund", "query_refund"])
async def test_a_signed_refund_answer_about_another_order_is_not_believed(
    name: str, call: str, provider: LocalProvider, local_keys: LocalKeys
) -> None:
    wire = Replaying()
    ours = adapter(name, local_keys, provider.url, wire)
    try:
        provider.pay(name, trade_no(name, order(1)), 600)
        provider.pay(name, trade_no(name, order(2)), 600)
        txn1 = (await ours.query_payment(order(1))).provider_txn_id or ""
        txn2 = (await ours.query_payment(order(2))).provider_txn_id or ""
        first = RefundRequest(order(1), "refund-of-1", txn1, 600, 600, "CNY")
        assert (await ours.refund(first)).status == "succeeded"
        if call == "query_refund":
            assert (await ours.query_refund(order(1), "refund-of-1")).status == "succeeded"
        wire.replay = wire.recorded[-1]  # the provider's signed answer about order 1's refund

        second = RefundRequest(order(2), "refund-of-2", txn2, 600, 600, "CNY")
        if call == "refund":
            answer = await ours.refund(second)
        else:
            answer = await ours.query_refund(order(2), "refund-of-2")
        trade2 = provider.book.get(name, trade_no(name, order(2)))
        assert trade2 is not None and trade2.refunded == 0  # order 2 was never refunded at the provider
        assert answer.status != "succeeded", (
            f"{name}.{call} believed a signed answer about order 1's refund for order 2: {answer}"
        )
    finally:
        await ours.aclose()
