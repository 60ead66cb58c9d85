"""WebhookChannel: delivers notifications to a platform backend as signed JSON POSTs."""

import time
from typing import Any

import httpx
import orjson

from notifier.adapters.outcomes import failure_for, post
from notifier.ports import Target
from servicekit.signatures import sign


class WebhookChannel:
    """POSTs the notification JSON, signed `X-Signature: t=..,v1=..` with the webhook secret."""

    name = "webhook"

    def __init__(self, url: str, secret: str, client: httpx.AsyncClient) -> None:
        self._url = url
        self._secret = secret
        self._client = client

    async def deliver(self, payload: dict[str, Any], target: Target) -> None:
        body = orjson.dumps(payload)
        headers = {
            "content-type": "application/json",
            "x-signature": sign(self._secret, body, int(time.time())),
            "x-credited-notification-id": str(payload["notification_id"]),
        }
        response = await post(self._client, "webhook", self._url, content=body, headers=headers)
        if not response.is_success:
            raise failure_for(response, "webhook")
