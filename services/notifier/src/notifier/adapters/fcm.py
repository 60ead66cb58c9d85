"""FcmChannel: the notification to an Android or iOS app through the FCM HTTP v1 API.

Authorization is an OAuth 2 access token minted from a Google service account (`NOTIFIER_FCM_SERVICE_ACCOUNT_FILE`,
the JSON key file) with google-auth, and minted again before it expires. The endpoint is the project's
https://fcm.googleapis.com/v1/projects/<project_id>/messages:send unless `NOTIFIER_FCM_ENDPOINT` names
another (a regional proxy, a test stand-in). `NOTIFIER_FCM_BEARER_TOKEN` is a fixed token instead, never
refreshed: only for a proxy that authenticates on its own, or tests.
"""

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
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


_MINTS_AT_ONCE = 2
"""Mints running at once, those past their deadline included: each holds a thread of the loop's default executor
(which also resolves host names) for as long as its token endpoint keeps trickling."""


class ServiceAccountTokens:
    """OAuth 2 access tokens for FCM minted from a service account with google-auth (a signed JWT exchanged at
    the key file's `token_uri`), reused until `refresh_margin_s` before they expire, then minted again.

    Minting is blocking HTTP in google-auth, so it runs in a thread; one refresh at a time serves every
    delivery waiting for it. google-auth's timeout bounds each read, not the exchange (an endpoint that trickles its
    answer a byte at a time holds it for as long as it likes), so a mint has one deadline, `timeout_s` from its start:
    past it the deliveries waiting get DeliveryFailed (retry) and the next one starts a mint of its own. A thread
    cannot be stopped, so the one left behind finishes in the background, on its own copy of the credentials; its
    token, if it gets one, is taken in the event loop only if the one held is no longer fresh (never an older token
    over a newer one), and at most `_MINTS_AT_ONCE` run at once.
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
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expiry: datetime | None = None  # naive UTC, as google-auth keeps it
        self._minting: set[asyncio.Future[service_account.Credentials]] = set()
        self.minted = 0

    @classmethod
    def from_file(cls, path: Path, **kwargs: Any) -> "ServiceAccountTokens":
        credentials = service_account.Credentials.from_service_account_file(str(path), scopes=[FCM_SCOPE])
        return cls(credentials, **kwargs)

    @property
    def project_id(self) -> str | None:
        project: str | None = self._credentials.project_id
        return project

    @property
    def mints_running(self) -> int:
        """Mints whose thread has not ended, the ones past their deadline included."""
        return len(self._minting)

    def _fresh(self) -> str | None:
        if self._token is None or self._expiry is None:
            return None
        return self._token if self._clock() < self._expiry.replace(tzinfo=UTC).timestamp() - self._margin_s else None

    def _mint(self) -> service_account.Credentials:
        """In a thread: a token minted on a copy of the credentials, so a mint that outlives its deadline writes
        nothing another one reads; its own transport, closed after, for the same reason."""
        own = copy.copy(self._credentials)
        request = _BoundedRequest(self._timeout_s)
        try:
            own.refresh(request)
        finally:
            request.session.close()
        return own

    def _minted(self, mint: "asyncio.Future[service_account.Credentials]") -> None:
        """In the event loop, when a mint ends, whether a delivery still waits for it or gave up at its deadline."""
        self._minting.discard(mint)
        if mint.cancelled() or mint.exception() is not None:
            return  # the waiter, if any, says why; a late failure is only a thread ended
        minted = mint.result()
        token, expiry = minted.token, minted.expiry
        if not isinstance(token, str) or expiry is None:
            return
        # Only over a token no longer fresh: google-auth dates a token's expiry from when its answer arrived, so a
        # late mint's token looks newer than the one minted after it, though the endpoint issued it first.
        if self._fresh() is None:
            self._token, self._expiry = token, expiry
            self.minted += 1
            log.info("minted an FCM access token valid until %s UTC", expiry)

    async def token(self) -> str:
        if (token := self._fresh()) is not None:
            return token
        async with self._lock:
            if (token := self._fresh()) is not None:
                return token  # another delivery refreshed it meanwhile
            if len(self._minting) >= _MINTS_AT_ONCE:
                reason = f"{len(self._minting)} FCM access token mints are still running past their {self._timeout_s} s"
                raise DeliveryFailed(reason + " deadline", retry=True)
            mint = asyncio.ensure_future(asyncio.to_thread(self._mint))
            self._minting.add(mint)
            mint.add_done_callback(self._minted)
            try:
                async with asyncio.timeout(self._timeout_s):
                    minted = await asyncio.shield(mint)  # the deadline gives up waiting, the thread runs on
            except TimeoutError:
                reason = f"FCM access token not minted within its {self._timeout_s} s deadline"
                raise DeliveryFailed(reason, retry=True) from None
            except google_exceptions.GoogleAuthError as exc:
                raise DeliveryFailed(f"FCM access token could not be minted: {exc}", retry=True) from None
            if not isinstance(minted.token, str):
                raise DeliveryFailed("the token endpoint answered without an access token", retry=True)
            return minted.token

    def refused(self, token: str) -> None:
        if self._token == token:
            self._token = self._expiry = None  # the next delivery mints a new one


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
