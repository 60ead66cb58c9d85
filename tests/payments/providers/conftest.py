"""Fixtures for the provider adapters: the local provider's test keys (made once per session: RSA
generation is slow), settings that make payments its merchant, and the local provider on loopback."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from credited.providers.faults import Faults
from credited.providers.keys import LocalKeys
from credited.providers.notifier import NotifyKnobs
from credited.providers.server import LocalProvider
from credited.stack.processes import free_port
from payments.adapters.providers.alipay import AlipayProvider
from payments.adapters.providers.registry import alipay_config, build_registry, wechatpay_config
from payments.adapters.providers.wechatpay import WeChatPayProvider
from payments.config import Settings


@pytest.fixture(scope="session")
def local_keys() -> LocalKeys:
    return LocalKeys.generate()


@pytest.fixture(scope="session")
def other_keys() -> LocalKeys:
    """Keys of another provider and merchant: the wrong keys."""
    return LocalKeys.generate()


def settings_for(keys: LocalKeys, base_url: str = "http://127.0.0.1:9", **changes: object) -> Settings:
    """payments' Settings as a merchant of the local provider with `keys`, from the env it prints."""
    env = {k.removeprefix("PAYMENTS_").lower(): v for k, v in keys.payments_env(base_url).items()}
    return Settings(**{**env, "provider_timeout_s": "2", **changes})  # type: ignore[arg-type]


def wechatpay(keys: LocalKeys, base_url: str = "http://127.0.0.1:9", **changes: object) -> WeChatPayProvider:
    config = wechatpay_config(settings_for(keys, base_url, **changes))
    assert config is not None
    return WeChatPayProvider(config)


def alipay(keys: LocalKeys, base_url: str = "http://127.0.0.1:9", **changes: object) -> AlipayProvider:
    config = alipay_config(settings_for(keys, base_url, **changes))
    assert config is not None
    return AlipayProvider(config)


def registry_names(keys: LocalKeys) -> frozenset[str]:
    return build_registry(settings_for(keys, psp_secrets={"sim": ["s"]})).names


def platform_cert_dir(keys: LocalKeys, directory: Path) -> str:
    """A directory holding the platform certificate, where the wechatpayv3 SDK looks for it."""
    pem = keys.platform_certificate.public_bytes(serialization.Encoding.PEM).decode()
    (directory / "platform.pem").write_text(pem)
    return str(directory)


@pytest.fixture
async def provider(local_keys: LocalKeys) -> AsyncIterator[LocalProvider]:
    """The local provider on loopback, with a short hang for timeouts; notifications go nowhere."""
    server = LocalProvider(free_port(), keys=local_keys, faults=Faults(hang_s=1.5), knobs=NotifyKnobs(seed=7))
    await server.start()
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), 10)
