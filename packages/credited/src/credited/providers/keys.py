"""The local provider's test credentials, made fresh (RSA 2048) every time it starts: WeChat Pay's
platform certificate and a merchant's API certificate, Alipay's key and an app's key, and the secrets
that go with them. Nothing here is ever a real merchant's."""

import base64
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _certificate(key: rsa.RSAPrivateKey, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


def private_pem(key: rsa.RSAPrivateKey) -> str:
    """PKCS#8 PEM, the form WeChat Pay's apiclient_key.pem has."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def bare(pem: str) -> str:
    """A PEM's base64 body on one line: how Alipay's console shows keys."""
    return "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))


def serial(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:X}"


def sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """Base64 SHA256withRSA, as both providers sign."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def _secret(length: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


@dataclass(frozen=True)
class LocalKeys:
    """Both sides' keys: the provider's (platform / Alipay) and the merchant's (merchant / app)."""

    wechat_platform_key: rsa.RSAPrivateKey = field(repr=False)
    platform_certificate: x509.Certificate
    wechat_merchant_key: rsa.RSAPrivateKey = field(repr=False)
    merchant_certificate: x509.Certificate
    alipay_key: rsa.RSAPrivateKey = field(repr=False)
    alipay_app_key: rsa.RSAPrivateKey = field(repr=False)
    apiv3_key: str = field(repr=False)
    mchid: str = "1900000109"
    wechat_appid: str = "wxd678efh567hg6787"
    alipay_app_id: str = "2021000000000001"
    alipay_seller_id: str = "2088000000000001"

    @classmethod
    def generate(cls) -> "LocalKeys":
        """Fresh keys and certificates (four RSA 2048 keys: about a second of CPU)."""
        platform, merchant = _key(), _key()
        return cls(
            wechat_platform_key=platform,
            platform_certificate=_certificate(platform, "WeChat Pay local platform"),
            wechat_merchant_key=merchant,
            merchant_certificate=_certificate(merchant, "WeChat Pay local merchant"),
            alipay_key=_key(),
            alipay_app_key=_key(),
            apiv3_key=_secret(32),
        )

    def public_parts(self) -> dict[str, str]:
        """What a merchant may see of the provider's side, and the merchant's ids."""
        return {
            "wechatpay_mchid": self.mchid,
            "wechatpay_appid": self.wechat_appid,
            "wechatpay_platform_certificate": self.platform_certificate.public_bytes(
                serialization.Encoding.PEM
            ).decode(),
            "wechatpay_platform_serial": serial(self.platform_certificate),
            "alipay_app_id": self.alipay_app_id,
            "alipay_seller_id": self.alipay_seller_id,
            "alipay_public_key": bare(public_pem(self.alipay_key.public_key())),
        }

    def payments_env(self, base_url: str) -> dict[str, str]:
        """The PAYMENTS_* settings that make payments a merchant of this local provider at `base_url`."""
        public = self.public_parts()
        return {
            "PAYMENTS_WECHATPAY_MCHID": self.mchid,
            "PAYMENTS_WECHATPAY_APPID": self.wechat_appid,
            "PAYMENTS_WECHATPAY_MERCHANT_SERIAL": serial(self.merchant_certificate),
            "PAYMENTS_WECHATPAY_MERCHANT_PRIVATE_KEY": private_pem(self.wechat_merchant_key),
            "PAYMENTS_WECHATPAY_APIV3_KEY": self.apiv3_key,
            "PAYMENTS_WECHATPAY_PLATFORM_CERTIFICATES": public["wechatpay_platform_certificate"],
            "PAYMENTS_WECHATPAY_API_BASE": base_url,
            "PAYMENTS_ALIPAY_APP_ID": self.alipay_app_id,
            "PAYMENTS_ALIPAY_APP_PRIVATE_KEY": bare(private_pem(self.alipay_app_key)),
            "PAYMENTS_ALIPAY_PUBLIC_KEY": public["alipay_public_key"],
            "PAYMENTS_ALIPAY_GATEWAY": f"{base_url}/gateway.do",
            "PAYMENTS_ALIPAY_SELLER_ID": self.alipay_seller_id,
        }
