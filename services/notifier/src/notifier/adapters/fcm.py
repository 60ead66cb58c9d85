"""FcmChannel: the notification to an Android or iOS app through the FCM HTTP v1 API.

Authorization is an OAuth 2 access token minted from a Google service account (`NOTIFIER_FCM_SERVICE_ACCOUNT_FILE`,
the JSON key file) with google-auth, and minted again before it expires. The endpoint is the project's
https://fcm.googleapis.com/v1/projects/<project_id>/messages:send unless `NOTIFIER_FCM_ENDPOINT` names
another (a regional proxy, a test stand-in). `NOTIFIER_FCM_BEARER_TOKEN` is a fixed token instead, never
refreshed: only for a proxy that authenticates on its own, or tests.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any, Protocol

import orjson
from google.auth import exceptions as google_exceptions
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from notifier.adapters.poster import Poster, failure_for
from notifier.ports import DeliveryFailed, Target

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_APNS_PRIORITY = {"high": "10", "normal": "5", "low": "5"}

log = logging.getLogger(__name__)


class BearerTokens(Protocol):
    """Where FcmChannel gets its `Authorization: Bearer` token."""

    async def token(self) -> str:
        """A token valid for a while yet; raises DeliveryFailed (retryable) when none can be had now."""
        ...

    def refused(self, token: str) -> None:
        """FCM refused `token` (401): do not hand it out again."""
        ...


class StaticBearer:
    """A fixed token (a proxy that authenticates on its own, tests): never refreshed."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    def refused(self, token: str) -> None:
        log.error("FCM refused the static NOTIFIER_FCM_BEARER_TOKEN; it is never refreshed")


class _BoundedRequest(Request):
    """google-auth's requests transport with a bounded timeout (its default waits 120 s)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    def __call__(
        self, url: Any, method: Any = "GET", body: Any = None, headers: Any = None, timeout: Any = None, **kwargs: Any
    ) -> Any:
        return super().__call__(url, method, body, headers, timeout or self._timeout_s, **kwargs)


class ServiceAccountTokens:
    """OAuth 2 access tokens for FCM minted from a service account with google-auth (a signed JWT exchanged at
    the key file's `token_uri`), reused until `refresh_margin_s` before they expire, then minted again.

    Minting is blocking HTTP in google-auth, so it runs in a thread; one refresh at a time serves every
    delivery waiting for it.
    """

    def __init__(
        self,
        credentials: service_account.Credentials,
        *,
        refresh_margin_s: float = 300.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = credentials
        self._margin_s = refresh_margin_s
        self._request = _BoundedRequest(timeout_s)
        self._clock = clock
        self._lock = asyncio.Lock()
        self.minted = 0

    @classmethod
    def from_file(cls, path: Path, **kwargs: Any) -> "ServiceAccountTokens":
        credentials = service_account.Credentials.from_service_account_file(str(path), scopes=[FCM_SCOPE])
        return cls(credentials, **kwargs)

    @property
    def project_id(self) -> str | None:
        project: str | None = self._credentials.project_id
        return project

    def _fresh(self) -> str | None:
        token: str | None = self._credentials.token
        expiry = self._credentials.expiry  # naive UTC, as google-auth keeps it
        if token is None or expiry is None:
            return None
        return token if self._clock() < expiry.replace(tzinfo=UTC).timestamp() - self._margin_s else None

    async def token(self) -> str:
        if (token := self._fresh()) is not None:
            return token
        async with self._lock:
            if (token := self._fresh()) is not None:
                return token  # another delivery refreshed it meanwhile
            try:
                await asyncio.to_thread(self._credentials.refresh, self._request)
            except google_exceptions.GoogleAuthError as exc:
                raise DeliveryFailed(f"FCM access token could not be minted: {exc}", retry=True) from None
            minted = self._credentials.token
            if not isinstance(minted, str):
                raise DeliveryFailed("the token endpoint answered without an access token", retry=True)
            self.minted += 1
            log.info("minted an FCM access token valid until %s UTC", self._credentials.expiry)
            return minted

    def refused(self, token: str) -> None:
        if self._credentials.token == token:
            self._credentials.token = None  # the next delivery mints a new one


def fcm_channel(
    service_account_file: Path | None,
    endpoint: str | None,
    static_token: str,
    poster: Poster,
    *,
    ttl_s: int,
) -> "FcmChannel | None":
    """The FCM channel the settings describe, or None when FCM is not configured."""
    tokens: BearerTokens
    if service_account_file is not None:
        account = ServiceAccountTokens.from_file(service_account_file)
        if endpoint is None and account.project_id is None:
            raise ValueError(f"{service_account_file} has no project_id: set NOTIFIER_FCM_ENDPOINT")
        endpoint = endpoint or f"https://fcm.googleapis.com/v1/projects/{account.project_id}/messages:send"
        tokens = account
    elif endpoint is not None:
        log.warning("FCM uses the static NOTIFIER_FCM_BEARER_TOKEN: it is not refreshed when it expires")
        tokens = StaticBearer(static_token)
    else:
        return None
    return FcmChannel(endpoint, tokens, poster, ttl_s=ttl_s)


class FcmChannel:
    name = "fcm"

    def __init__(self, endpoint: str, tokens: BearerTokens, poster: Poster, *, ttl_s: int = 86400) -> None:
        self.endpoint = endpoint
        self._tokens = tokens
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
        for attempt in (1, 2):
            bearer = await self._tokens.token()
            headers = {"authorization": f"Bearer {bearer}", "content-type": "application/json; charset=UTF-8"}
            answer = await self._poster.post("FCM", self.endpoint, body, headers)
            if answer.ok:
                return
            # A 401 naming THIRD_PARTY_AUTH_ERROR is about the project's APNs or Web Push credentials, not our token:
            # dropping the token would mint one per delivery (a refresh storm) and post the message twice.
            if answer.status != 401 or attempt == 2 or b"THIRD_PARTY_AUTH_ERROR" in answer.body:
                break
            self._tokens.refused(bearer)  # revoked or expired early: once more with a token minted now
        # FCM says a token is dead with the error code UNREGISTERED (on a 404, sometimes a 400). A 404 without it is
        # about the endpoint (another project, a wrong path, a proxy's page), not the device: taking it for "gone"
        # would forget every FCM subscription that receives a notification while the endpoint is wrong.
        gone = frozenset({answer.status}) if b"UNREGISTERED" in answer.body else frozenset()
        raise failure_for(answer, "FCM", gone_on=gone)
