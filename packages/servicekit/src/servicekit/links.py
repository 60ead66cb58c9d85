"""Signed status links: what lets a user, and only that user, watch their order without an API key.

A token is bound to one order and one user and carries its expiry: `<expires unix s>.<user id, base64url>.
<HMAC-SHA256, base64url>`, URL-safe without escaping. The MAC covers a purpose label, the order id, the user
id and the expiry, so a token for another order, another user, a later expiry or another purpose does not
verify. The secret (CREDITED_STATUS_LINK_SECRET) rotates like the providers' secrets: a comma-separated list,
new tokens signed with the first, any of them accepted, compared in constant time. Every refusal is the same
to the user (the page answers 404); the code says why, for logs and tests.
"""

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from pydantic import SecretStr

from servicekit.secret_guard import STATUS_LINK_DEV_SECRET
from servicekit.settings import ServiceSettings

MIN_SECRET_LENGTH = 32
"""HMAC-SHA256 keys below 256 bits would be the weakest part of the link."""
DEFAULT_TTL_S = 30 * 24 * 3600
"""Long enough to follow a top-up through a review and a refund, short enough that an old link dies."""

_PURPOSE = b"credited/status-link/v1"
_TOKEN = re.compile(r"^(?P<exp>[0-9]{1,12})\.(?P<user>[A-Za-z0-9_-]{1,400})\.(?P<mac>[A-Za-z0-9_-]{43})$")


class LinkRefused(Exception):
    """A token that is malformed, expired, or signed for something else (tampered, other order or user)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True, slots=True)
class StatusGrant:
    """What a valid token lets its holder see: this user's view of this order, until `expires_at`."""

    order_id: str
    user_id: str
    expires_at: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def secrets_from(setting: SecretStr | str | None) -> list[str]:
    """The active secrets of a comma-separated setting, first (signing) one first."""
    raw = setting.get_secret_value() if isinstance(setting, SecretStr) else (setting or "")
    return [s.strip() for s in raw.split(",") if s.strip()]


class StatusLinks:
    """Signs and verifies status-link tokens with the active secrets."""

    def __init__(self, secrets: Sequence[str], *, now: Callable[[], float] = time.time) -> None:
        if not secrets:
            raise ValueError("status links need a secret (CREDITED_STATUS_LINK_SECRET)")
        short = [i for i, s in enumerate(secrets) if len(s) < MIN_SECRET_LENGTH]
        if short:
            raise ValueError(f"status-link secret(s) #{short} shorter than {MIN_SECRET_LENGTH} characters")
        self._keys = [s.encode() for s in secrets]
        self._now = now

    def _mac(self, key: bytes, order_id: str, user_id: str, expires_at: int) -> bytes:
        # Each field length-prefixed: no split of one order id and user id can sign as another.
        fields = (_PURPOSE, order_id.encode(), user_id.encode(), str(expires_at).encode())
        message = b"".join(len(f).to_bytes(4, "big") + f for f in fields)
        return hmac.new(key, message, hashlib.sha256).digest()

    def token(self, order_id: str, user_id: str, *, ttl_s: int = DEFAULT_TTL_S) -> str:
        """A token for `user_id` to watch `order_id` for `ttl_s` seconds, signed with the first secret."""
        expires_at = int(self._now()) + ttl_s
        mac = self._mac(self._keys[0], order_id, user_id, expires_at)
        return f"{expires_at}.{_b64(user_id.encode())}.{_b64(mac)}"

    def url(self, base_url: str, order_id: str, user_id: str, *, ttl_s: int = DEFAULT_TTL_S) -> str:
        """The status page link: `<base>/orders/<order id>?token=<token>`."""
        token = self.token(order_id, user_id, ttl_s=ttl_s)
        return f"{base_url.rstrip('/')}/orders/{quote(order_id, safe='')}?token={token}"

    def verify(self, order_id: str, token: str | None) -> StatusGrant:
        """The grant a token gives for `order_id`, or LinkRefused."""
        match = _TOKEN.match(token or "")
        if match is None:
            raise LinkRefused("link_malformed", "not a status-link token")
        try:
            user_id = _unb64(match["user"]).decode()
            mac = _unb64(match["mac"])
        except (binascii.Error, UnicodeDecodeError):
            raise LinkRefused("link_malformed", "not a status-link token") from None
        expires_at = int(match["exp"])
        matched = False
        for key in self._keys:  # every secret, so the time taken says nothing about which one matched
            matched |= hmac.compare_digest(self._mac(key, order_id, user_id, expires_at), mac)
        if not matched:
            raise LinkRefused("link_invalid", "the token was not signed for this order and user")
        if expires_at <= self._now():
            raise LinkRefused("link_expired", "the link has expired")
        return StatusGrant(order_id, user_id, expires_at)


def status_links(settings: ServiceSettings, *, now: Callable[[], float] = time.time) -> StatusLinks:
    """The service's StatusLinks from CREDITED_STATUS_LINK_SECRET; unset in development mode, the local stack's
    published secret (payments and the notifier then agree without configuration; refused in production)."""
    secrets = secrets_from(settings.status_link_secret)
    if not secrets and settings.environment == "development":
        secrets = [STATUS_LINK_DEV_SECRET]
    return StatusLinks(secrets, now=now)
