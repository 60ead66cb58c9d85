"""HMAC-SHA256 signatures in the header form `t=<unix seconds>,v1=<hex of HMAC(secret, "<t>.<raw body>")>`.

Payment providers sign their callbacks this way, and the notifier signs its webhooks the same way.
"""

import hashlib
import hmac
import re
from collections.abc import Iterable

SIGNATURE_TOLERANCE_S = 300

_HEADER = re.compile(r"^t=(?P<t>[0-9]{1,12}),v1=(?P<v1>[0-9a-f]{64})$")


class SignatureError(ValueError):
    """A signature header that is malformed, stale, from the future, or does not match."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def parse(header: str) -> tuple[int, str]:
    """(timestamp, hex digest) of a header, or SignatureError('signature_malformed')."""
    match = _HEADER.match(header.strip())
    if match is None:
        raise SignatureError("signature_malformed", "X-Signature must look like t=<unix seconds>,v1=<64 hex>")
    return int(match["t"]), match["v1"]


def verify(
    header: str | None,
    body: bytes,
    secrets: Iterable[str],
    now: float,
    tolerance_s: int = SIGNATURE_TOLERANCE_S,
) -> int:
    """Check `header` against every active secret (rotation), in constant time; return its timestamp."""
    if not header:
        raise SignatureError("signature_missing", "the X-Signature header is missing")
    timestamp, digest = parse(header)
    if timestamp < now - tolerance_s:
        raise SignatureError("signature_expired", f"signature is older than {tolerance_s} s")
    if timestamp > now + tolerance_s:
        raise SignatureError("signature_from_future", f"signature is more than {tolerance_s} s in the future")
    signed = f"{timestamp}.".encode() + body
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        matched |= hmac.compare_digest(expected, digest)
    if not matched:
        raise SignatureError("signature_mismatch", "signature does not match any active secret")
    return timestamp
