"""The provider adapters by name, built from payments' settings."""

import logging
from collections.abc import Iterable

from payments.adapters.providers import keys
from payments.adapters.providers.alipay import AlipayConfig, AlipayProvider
from payments.adapters.providers.simulated import SimulatedProvider, SimulatedRefunds
from payments.adapters.providers.wechatpay import WeChatPayConfig, WeChatPayProvider
from payments.config import SECRET_PREFIX, Settings
from payments.ports import PaymentProvider

log = logging.getLogger(__name__)

WECHATPAY = "wechatpay"
ALIPAY = "alipay"


class ProviderRegistry:
    """Payment providers by the name their orders and callbacks carry. Names are unique."""

    def __init__(self, providers: Iterable[PaymentProvider]) -> None:
        self._by_name: dict[str, PaymentProvider] = {}
        for provider in providers:
            if provider.name in self._by_name:
                raise ValueError(f"two payment providers are named {provider.name!r}")
            self._by_name[provider.name] = provider

    def get(self, name: str) -> PaymentProvider | None:
        return self._by_name.get(name)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)

    async def aclose(self) -> None:
        """Release the adapters' connections."""
        for provider in self._by_name.values():
            await provider.aclose()


def wechatpay_config(settings: Settings) -> WeChatPayConfig | None:
    """The WeChat Pay merchant the settings describe, or None when PAYMENTS_WECHATPAY_MCHID is unset."""
    if settings.wechatpay_mchid is None:
        return None
    assert settings.wechatpay_merchant_private_key is not None
    assert settings.wechatpay_apiv3_key is not None
    platform = keys.certificates_by_serial(settings.wechatpay_platform_certificates or "")
    if settings.wechatpay_public_key is not None and settings.wechatpay_public_key_id is not None:
        platform[settings.wechatpay_public_key_id] = keys.public_key(settings.wechatpay_public_key)
    return WeChatPayConfig(
        mchid=settings.wechatpay_mchid,
        appid=settings.wechatpay_appid or "",
        merchant_serial=(settings.wechatpay_merchant_serial or "").upper(),
        merchant_key=keys.private_key(settings.wechatpay_merchant_private_key.get_secret_value()),
        apiv3_key=settings.wechatpay_apiv3_key.get_secret_value().encode(),
        platform_keys=platform,
        base_url=settings.wechatpay_api_base.rstrip("/"),
        notify_url=settings.wechatpay_refund_notify_url or "",
        tolerance_s=settings.provider_timestamp_tolerance_s,
        timeout_s=settings.provider_timeout_s,
    )


def alipay_config(settings: Settings) -> AlipayConfig | None:
    """The Alipay app the settings describe, or None when PAYMENTS_ALIPAY_APP_ID is unset."""
    if settings.alipay_app_id is None:
        return None
    assert settings.alipay_app_private_key is not None
    assert settings.alipay_public_key is not None
    return AlipayConfig(
        app_id=settings.alipay_app_id,
        app_private_key=keys.private_key(settings.alipay_app_private_key.get_secret_value()),
        alipay_public_key=keys.public_key(settings.alipay_public_key),
        gateway=settings.alipay_gateway,
        seller_id=settings.alipay_seller_id or "",
        tolerance_s=settings.provider_timestamp_tolerance_s,
        timeout_s=settings.provider_timeout_s,
    )


def build_registry(settings: Settings, refunds: SimulatedRefunds | None = None) -> ProviderRegistry:
    """Every provider the settings configure: WeChat Pay and Alipay when their merchant is configured, and in
    development only (CREDITED_ENV=development) one simulated provider per HMAC secret (PAYMENTS_PSP_SECRET_<NAME>),
    sharing one refund simulator (`refunds`, else one with the settings' PAYMENTS_SIM_REFUND_* fault shares). Keys
    and certificates are read here, so a bad one stops the start."""
    if refunds is None:
        refunds = SimulatedRefunds(settings.sim_refund_failure_share, settings.sim_refund_timeout_share)
    simulated = settings.simulated_providers
    if settings.psp_secrets.keys() - simulated.keys():
        log.error(
            "simulated providers run only in development (CREDITED_ENV=development): %s ignored",
            ", ".join(f"{SECRET_PREFIX}{name.upper()}" for name in sorted(settings.psp_secrets)),
        )
    providers: list[PaymentProvider] = [
        SimulatedProvider(name, secrets, refunds) for name, secrets in sorted(simulated.items())
    ]
    wechat = wechatpay_config(settings)
    if wechat is not None:
        providers.append(WeChatPayProvider(wechat, name=WECHATPAY))
    alipay = alipay_config(settings)
    if alipay is not None:
        providers.append(AlipayProvider(alipay, name=ALIPAY))
    return ProviderRegistry(providers)
