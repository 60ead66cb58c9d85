"""RSA keys and SHA256withRSA (PKCS#1 v1.5) signatures, as both WeChat Pay and Alipay use them.

Keys are read from PEM text, or from the bare base64 of their DER form, which is how Alipay's console
hands them out.
"""

import base64
import binascii

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _der(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError("not a PEM key and not the base64 of a DER key") from exc


def private_key(text: str) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM (PKCS#8 or PKCS#1) or bare base64 DER."""
    data = text.strip()
    key = (
        serialization.load_pem_private_key(data.encode(), password=None)
        if data.startswith("-----BEGIN")
        else serialization.load_der_private_key(_der(data), password=None)
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the key is not an RSA private key")
    return key


def public_key(text: str) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM public key, a PEM certificate, or bare base64 DER."""
    data = text.strip()
    if data.startswith("-----BEGIN CERTIFICATE"):
        key: object = x509.load_pem_x509_certificate(data.encode()).public_key()
    elif data.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(data.encode())
    else:
        key = serialization.load_der_public_key(_der(data))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the key is not an RSA public key")
    return key


def certificates_by_serial(pem: str) -> dict[str, rsa.RSAPublicKey]:
    """The RSA public keys of every certificate in `pem`, by serial number in upper-case hex (WeChat Pay
    names a platform certificate by it in Wechatpay-Serial)."""
    found: dict[str, rsa.RSAPublicKey] = {}
    for cert in x509.load_pem_x509_certificates(pem.encode()):
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError(f"certificate {cert.serial_number:X} does not hold an RSA key")
        found[f"{cert.serial_number:X}"] = key
    return found


def sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """Base64 of the SHA256withRSA signature of `message`."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify(key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    """Whether `signature` (base64) is `key`'s SHA256withRSA signature of `message`."""
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True
