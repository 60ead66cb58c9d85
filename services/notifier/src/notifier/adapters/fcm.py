"""FcmChannel: the notification to an Android or iOS app through the FCM HTTP v1 API.

The endpoint is configured (`NOTIFIER_FCM_ENDPOINT`, normally
https://fcm.googleapis.com/v1/projects/<project>/messages:send), so tests and a regional proxy can stand in.
Authorization is a static bearer token from `NOTIFIER_FCM_BEARER_TOKEN` for now: production needs an OAuth 2
access token minted from a service account and refreshed before it expires, which this adapter does not do.
"""

from typing import Any

import orjson

from notifier.adapters.poster import GONE, Poster, failure_for
from notifier.ports import DeliveryFailed, Target

_APNS_PRIORITY = {"high": "10", "normal": "5", "low": "5"}


class FcmChannel:
    name = "fcm"

    def __init__(self, endpoint: str, bearer_token: str, poster: Poster, *, ttl_s: int = 86400) -> None:
        self._endpoint = endpoint
        self._token = bearer_token
        self._poster = poster
        self._ttl_s = ttl_s

    def message(self, payload: dict[str, Any], token: str) -> dict[str, Any]:
        """The FCM v1 message: collapse key and notification tag are the order's push topic on every platform."""
        urgency = str(payload.get("urgency", "normal"))
        topic = str(payload["push_topic"])
        data = {key: str(payload[key]) for key in ("notification_id", "order_id", "status", "locale", "changed_at")}
        return {
            "message": {
                "token": token,
                "notification": {"title": payload["title"], "body": payload["body"]},
                "data": data,
                "android": {
                    "collapse_key": topic,
                    "priority": "HIGH" if urgency == "high" else "NORMAL",
                    "ttl": f"{self._ttl_s}s",
                    "notification": {"tag": topic},
                },
                "apns": {"headers": {"apns-collapse-id": topic, "apns-priority": _APNS_PRIORITY.get(urgency, "5")}},
                "webpush": {"headers": {"Topic": topic, "Urgency": urgency, "TTL": str(self._ttl_s)}},
            }
        }

    async def deliver(self, payload: dict[str, Any], target: Target) -> None:
        if not target.endpoint:
            raise DeliveryFailed("no FCM registration token", retry=False)
        body = orjson.dumps(self.message(payload, target.endpoint))
        headers = {"authorization": f"Bearer {self._token}", "content-type": "application/json; charset=UTF-8"}
        answer = await self._poster.post("FCM", self._endpoint, body, headers)
        if answer.ok:
            return
        # FCM says a token is dead with 404 UNREGISTERED (sometimes 400 with that error code).
        gone = GONE | ({answer.status} if b"UNREGISTERED" in answer.body else set())
        raise failure_for(answer, "FCM", gone_on=frozenset(gone))
