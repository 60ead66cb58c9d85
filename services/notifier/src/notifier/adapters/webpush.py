"""WebPushChannel: the notification as an encrypted Web Push message to the user's browser.

RFC 8030 delivery (TTL, Urgency, and Topic: the order's collapse key, so a newer status replaces an older
one still waiting at the push service), RFC 8291 message encryption (aes128gcm, done by `http_ece`, the
library pywebpush uses) and RFC 8292 VAPID (an ES256 JWT per push service origin, signed here with
`cryptography` and reused until shortly before it expires).
"""

import base64
import binascii
import os
import time
from typing import Any
from urllib.parse import urlsplit

import http_ece  # type: ignore[import-untyped]
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from notifier.adapters.poster import GONE, Poster, failure_for
from notifier.ports import DeliveryFailed, Target
from servicekit.links import DEFAULT_TTL_S, StatusLinks

MAX_PLAINTEXT = 3993
"""4096 bytes of body, less the aes128gcm header (86) and the record's padding delimiter and tag (17)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class VapidSigner:
    """The application server's identity towards push services (RFC 8292)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, subject: str, lifetime_s: int = 12 * 3600) -> None:
        self._key = private_key
        self._subject = subject
        self._lifetime_s = lifetime_s
        self._tokens: dict[str, tuple[str, float]] = {}
        point = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.public_key = b64url(point)
        """The applicationServerKey browsers subscribe with (base64url, uncompressed P-256 point)."""

    @classmethod
    def from_setting(cls, value: str, subject: str) -> "VapidSigner":
        """A key given as PEM, or as the base64url raw 32-byte private value (what `vapid --gen` prints)."""
        if "BEGIN" in value:
            key = serialization.load_pem_private_key(value.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("the VAPID key must be an EC P-256 private key")
            return cls(key, subject)
        return cls(ec.derive_private_key(int.from_bytes(b64url_decode(value.strip()), "big"), ec.SECP256R1()), subject)

    @classmethod
    def generate(cls, subject: str) -> "VapidSigner":
        return cls(ec.generate_private_key(ec.SECP256R1()), subject)

    def authorization(self, endpoint: str, now: float | None = None) -> str:
        """The `Authorization: vapid t=<JWT>, k=<public key>` header for a push service endpoint."""
        now = time.time() if now is None else now
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        cached = self._tokens.get(audience)
        if cached is None or cached[1] - now < 600:
            expires = int(now) + self._lifetime_s
            cached = (self._sign({"aud": audience, "exp": expires, "sub": self._subject}), float(expires))
            self._tokens[audience] = cached
        return f"vapid t={cached[0]}, k={self.public_key}"

    def _sign(self, claims: dict[str, Any]) -> str:
        header = b64url(orjson.dumps({"typ": "JWT", "alg": "ES256"}))
        signing_input = f"{header}.{b64url(orjson.dumps(claims))}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def check_keys(p256dh: str, auth: str) -> None:
    """Refuse subscription keys that cannot encrypt: p256dh a P-256 point, auth 16 bytes (RFC 8291 §3)."""
    try:
        point, secret = b64url_decode(p256dh), b64url_decode(auth)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except (ValueError, binascii.Error):
        raise ValueError("keys.p256dh is not a base64url P-256 public key") from None
    if len(secret) != 16:
        raise ValueError("keys.auth must be 16 bytes, base64url")


def endpoint_malformed(endpoint: str) -> str | None:
    """Why `endpoint` is not a URL a push can go to (a broken IPv6 host, a port that is not a number from 0 to
    65535), or None."""
    try:
        urlsplit(endpoint).port  # noqa: B018 - reading the port is what checks it
    except ValueError as exc:
        return str(exc)
    return None


def endpoint_allowed(endpoint: str, hosts: frozenset[str], *, allow_http: bool) -> bool:
    """Push endpoints come from users: only https to a known push service (exact host or `*.domain`), so
    the notifier cannot be made to POST into our own network. Plain http only where configured (tests)."""
    parts = urlsplit(endpoint)
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        return False
    host = (parts.hostname or "").lower()
    return host in hosts or any(h.startswith("*.") and host.endswith(h[1:]) for h in hosts)


def encrypt(plaintext: bytes, p256dh: str, auth: str) -> bytes:
    """RFC 8291: a fresh sender key and salt for every message, aes128gcm in one record."""
    sender = ec.generate_private_key(ec.SECP256R1())
    encrypted: bytes = http_ece.encrypt(
        plaintext,
        salt=os.urandom(16),
        private_key=sender,
        dh=b64url_decode(p256dh),
        auth_secret=b64url_decode(auth),
        version="aes128gcm",
    )
    return encrypted


class WebPushChannel:
    name = "webpush"

    def __init__(
        self,
        signer: VapidSigner,
        poster: Poster,
        *,
        ttl_s: int = 86400,
        allowed_hosts: frozenset[str] = frozenset(),
        allow_http: bool = False,
        page_url: str | None = None,
        links: StatusLinks | None = None,
        link_ttl_s: int = DEFAULT_TTL_S,
    ) -> None:
        self._signer = signer
        self._poster = poster
        self._ttl_s = ttl_s
        self._hosts = allowed_hosts
        self._allow_http = allow_http
        self._page_url = page_url.rstrip("/") if page_url else None
        self._links = links
        self._link_ttl_s = link_ttl_s

    def message(self, payload: dict[str, Any]) -> bytes:
        """What the browser's service worker receives: enough to show the notification and open the page."""
        message = {
            "notification_id": payload["notification_id"],
            "order_id": payload["order_id"],
            "status": payload["status"],
            "title": payload["title"],
            "body": payload["body"],
            "tag": payload["collapse_key"],
            "locale": payload["locale"],
            "changed_at": payload["changed_at"],
        }
        if self._page_url and self._links:  # the user's own signed link: a bare one would get 404
            link = self._links.url(self._page_url, payload["order_id"], payload["user_id"], ttl_s=self._link_ttl_s)
            message["url"] = f"{link}&lang={payload['locale']}"
        return orjson.dumps(message)

    async def deliver(self, payload: dict[str, Any], target: Target) -> None:
        if not endpoint_allowed(target.endpoint, self._hosts, allow_http=self._allow_http):
            raise DeliveryFailed("push endpoint is not an allowed push service", retry=False)
        plaintext = self.message(payload)
        if len(plaintext) > MAX_PLAINTEXT:
            raise DeliveryFailed(f"message of {len(plaintext)} bytes is too large for Web Push", retry=False)
        headers = {
            "ttl": str(self._ttl_s),
            "urgency": str(payload.get("urgency", "normal")),
            "topic": str(payload["push_topic"]),
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "authorization": self._signer.authorization(target.endpoint),
        }
        body = encrypt(plaintext, target.p256dh, target.auth)
        answer = await self._poster.post("push service", target.endpoint, body, headers)
        if not answer.ok:
            raise failure_for(answer, "push service", gone_on=GONE)
