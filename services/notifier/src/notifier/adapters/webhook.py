"""WebhookChannel: delivers notifications to a platform backend as signed JSON POSTs."""

import time
from typing import Any

import orjson

from notifier.adapters.poster import Poster, failure_for
from notifier.domain import for_platform
from notifier.ports import Target
from servicekit.signatures import sign


class WebhookChannel:
    """POSTs the notification JSON, signed `X-Signature: t=..,v1=..` with the webhook secret. Its `reason` is the
    stable code (notifier.domain.reasons): the internal reason, which may name staff and quote their notes or a
    provider's answer, stays on the support views."""

    name = "webhook"

    def __init__(self, url: str, secret: str, poster: Poster) -> None:
        self._url = url
        self._secret = secret
        self._poster = poster

    async def deliver(self, payload: dict[str, Any], target: Target) -> None:
        body = orjson.dumps(for_platform(payload))
        headers = {
            "content-type": "application/json",
            "x-signature": sign(self._secret, body, int(time.time())),
            "x-credited-notification-id": str(payload["notification_id"]),
        }
        answer = await self._poster.post("webhook", self._url, body, headers)
        if not answer.ok:
            raise failure_for(answer, "webhook")
