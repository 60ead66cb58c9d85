"""The registry of provider adapters and the settings it is built from."""

import pytest
from pydantic import ValidationError

from credited.providers.keys import LocalKeys
from payments.adapters.providers.registry import build_registry
from payments.config import Settings
from payments.domain import RefundRequest
from tests.payments.providers.conftest import settings_for


def test_every_configured_provider_is_registered_by_name(local_keys: LocalKeys) -> None:
    registry = build_registry(settings_for(local_keys, psp_secrets={"sim": ["s"]}, environment="development"))
    assert registry.names == {"sim", "wechatpay", "alipay"}
    for name in registry.names:
        provider = registry.get(name)
        assert provider is not None and provider.name == name
    assert registry.get("paypal") is None


def test_in_production_a_psp_secret_builds_no_simulated_provider_only_the_real_ones(local_keys: LocalKeys) -> None:
    settings = settings_for(local_keys, psp_secrets={"sim": ["s"], "alipay_sim": ["s"]})
    assert settings.environment == "production"
    assert build_registry(settings).names == {"wechatpay", "alipay"}
    assert settings.simulated_providers == {}


def test_no_provider_key_or_secret_has_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PAYMENTS_WECHATPAY_MCHID", "PAYMENTS_ALIPAY_APP_ID"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    secrets = [
        settings.wechatpay_merchant_private_key,
        settings.wechatpay_apiv3_key,
        settings.wechatpay_platform_certificates,
        settings.alipay_app_private_key,
        settings.alipay_public_key,
    ]
    assert secrets == [None] * len(secrets)
    assert build_registry(settings.model_copy(update={"psp_secrets": {}})).names == frozenset()


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("wechatpay_apiv3_key", "PAYMENTS_WECHATPAY_APIV3_KEY"),
        ("wechatpay_merchant_private_key", "PAYMENTS_WECHATPAY_MERCHANT_PRIVATE_KEY"),
        ("wechatpay_platform_certificates", "PAYMENTS_WECHATPAY_PLATFORM_CERTIFICATES"),
        ("alipay_public_key", "PAYMENTS_ALIPAY_PUBLIC_KEY"),
        ("alipay_app_private_key", "PAYMENTS_ALIPAY_APP_PRIVATE_KEY"),
    ],
)
def test_a_provider_configured_without_one_of_its_keys_does_not_start(
    local_keys: LocalKeys, missing: str, named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        settings_for(local_keys, **{missing: None})


def test_a_key_that_is_not_one_stops_the_start(local_keys: LocalKeys) -> None:
    with pytest.raises(ValueError, match="key"):
        build_registry(settings_for(local_keys, alipay_public_key="bm90IGEga2V5"))
    with pytest.raises(ValueError, match="32 bytes"):
        build_registry(settings_for(local_keys, wechatpay_apiv3_key="short"))


def test_two_providers_cannot_share_a_name(local_keys: LocalKeys) -> None:
    with pytest.raises(ValueError, match="two payment providers are named 'alipay'"):
        build_registry(settings_for(local_keys, psp_secrets={"alipay": ["s"]}, environment="development"))


def test_the_settings_the_local_provider_prints_configure_payments_from_the_environment(
    local_keys: LocalKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in local_keys.payments_env("http://127.0.0.1:8110").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PAYMENTS_PSP_SECRET_SIM", "sim-secret")
    monkeypatch.setenv("CREDITED_ENV", "development")
    registry = build_registry(Settings())
    assert {"sim", "wechatpay", "alipay"} <= registry.names


async def test_the_simulated_providers_refunds_take_their_fault_shares_from_the_settings(local_keys: LocalKeys) -> None:
    settings = settings_for(
        local_keys, psp_secrets={"sim": ["s"]}, sim_refund_timeout_share=1.0, environment="development"
    )
    sim = build_registry(settings).get("sim")
    assert sim is not None
    request = RefundRequest("ord_1", "refund-1", "tx1", 600, 600, "CNY")
    assert (await sim.refund(request)).status == "unknown"  # every first answer lost, the refund made
    assert (await sim.query_refund("ord_1", "refund-1")).status == "succeeded"
