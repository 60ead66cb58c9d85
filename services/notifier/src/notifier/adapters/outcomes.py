"""How a receiver's HTTP answer (webhook, Web Push service, FCM) becomes a delivery outcome."""

import email.utils
import time
from collections.abc import Callable, Mapping

import httpx

from notifier.ports import DeliveryFailed

GONE = frozenset({404, 410})
"""A push service that answers 404 or 410 no longer knows the subscription: it is removed (RFC 8030 §7.3)."""


def retry_after_s(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def failure_for(response: httpx.Response, what: str, *, gone_on: frozenset[int] = frozenset()) -> DeliveryFailed:
    """The failure an unsuccessful answer means: 5xx, 408 and 429 pass (retry, honouring Retry-After);
    `gone_on` statuses mean the device is gone; any other 4xx is a mistake no retry can fix."""
    status = response.status_code
    detail = response.text[:200].strip() if response.content else ""
    reason = f"{what} answered {status}" + (f": {detail}" if detail else "")
    if status in gone_on:
        return DeliveryFailed(reason, retry=False, gone=True)
    retryable = status >= 500 or status in (408, 429)
    return DeliveryFailed(reason, retry=retryable, retry_after_s=retry_after_s(response.headers.get("retry-after")))


async def post(
    client: httpx.AsyncClient, what: str, url: str, *, content: bytes, headers: Mapping[str, str]
) -> httpx.Response:
    """POST, with a timeout or a connection failure as a retryable DeliveryFailed."""
    try:
        return await client.post(url, content=content, headers=headers)
    except httpx.TimeoutException:
        raise DeliveryFailed(f"{what} timed out", retry=True) from None
    except httpx.TransportError as exc:
        raise DeliveryFailed(f"{what} unreachable: {exc!r}", retry=True) from None
