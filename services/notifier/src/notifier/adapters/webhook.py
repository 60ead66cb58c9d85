"""WebhookChannel: delivers notifications to a platform backend as signed JSON POSTs."""

import time
from typing import Any

import httpx
import orjson

from notifier.ports import DeliveryFailed
from servicekit.signatures import sign


class WebhookChannel:
    """POSTs the notification JSON, signed `X-Signature: t=..,v1=..` with the webhook secret."""

    name = "webhook"

    def __init__(self, url: str, secret: str, client: httpx.AsyncClient) -> None:
        self._url = url
        self._secret = secret
        self._client = client

    async def deliver(self, payload: dict[str, Any]) -> None:
        body = orjson.dumps(payload)
        headers = {
            "content-type": "application/json",
            "x-signature": sign(self._secret, body, int(time.time())),
            "x-credited-notification-id": str(payload["notification_id"]),
        }
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryFailed("webhook timed out", retry=True) from None
        except httpx.TransportError as exc:
            raise DeliveryFailed(f"webhook unreachable: {exc!r}", retry=True) from None
        if response.is_success:
            return
        retry_after = _retry_after(response.headers.get("retry-after"))
        retryable = response.status_code >= 500 or response.status_code in (408, 429)
        raise DeliveryFailed(f"webhook answered {response.status_code}", retry=retryable, retry_after_s=retry_after)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
