"""FCM with OAuth 2 service-account tokens (google-auth): minted from the key file at its token endpoint, reused,
minted again before and after they expire, and carried as the bearer of each FCM HTTP v1 request.

Both ends are real HTTP on loopback: a token endpoint that checks the signed JWT grant as Google's does (and can
trickle its answer a byte at a time), and an FCM stand-in that records the bearer of every send. Only the notifier's
clock is moved, never slept on.
"""

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from credited.stack.processes import free_port
from notifier.adapters.fcm import FCM_SCOPE, FcmChannel, ServiceAccountTokens, fcm_channel
from notifier.adapters.poster import AiohttpPoster
from notifier.ports import DeliveryFailed, Target
from servicekit.netguard import AddressPolicy
from tests.kafka_reader import eventually
from tests.loopback_http import serving
from tests.notifier.unit.test_channels import PAYLOAD

EMAIL = "notifier@credited-test.iam.gserviceaccount.com"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
LIFETIME_S = 3600
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class Loopback:
    """The token endpoint and the FCM stand-in, on one loopback server."""

    port: int = 0
    issued: list[str] = field(default_factory=list)
    bearers: list[str] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    apns_broken: set[str] = field(default_factory=set)
    """Registration tokens of devices whose platform credentials (APNs, Web Push) the project has wrong."""
    trickle_s: float = 0.0
    """When set, the next token answer goes out a byte at a time, this long apart (each read within its timeout)."""
    trickled: int = 0
    """Trickled answers sent to their last byte."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        header, claims, signature = str(form["assertion"]).split(".")
        try:
            KEY.public_key().verify(_b64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except Exception:  # noqa: BLE001 - any failure to verify is a refused grant
            return web.json_response({"error": "invalid_grant", "error_description": "bad signature"}, status=400)
        grant = json.loads(_b64(claims))
        fresh = grant["iat"] <= time.time() + 60 < grant["exp"] + 60
        if (grant["iss"], grant["aud"], grant["scope"], fresh) != (EMAIL, GOOGLE_TOKEN_AUDIENCE, FCM_SCOPE, True):
            return web.json_response({"error": "invalid_grant", "error_description": str(grant)}, status=400)
        self.issued.append(f"token-{len(self.issued) + 1}")
        if self.trickle_s:
            return await self._trickle(request)
        return web.json_response({"access_token": self.issued[-1], "expires_in": LIFETIME_S, "token_type": "Bearer"})

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        """The token answer a byte at a time, valid half as long as the others."""
        gap_s, self.trickle_s = self.trickle_s, 0.0
        body = json.dumps({"access_token": self.issued[-1], "expires_in": LIFETIME_S // 2, "token_type": "Bearer"})
        answer = web.StreamResponse(headers={"content-type": "application/json"})
        answer.content_length = len(body)
        await answer.prepare(request)
        for byte in body.encode():
            await asyncio.sleep(gap_s)
            await answer.write(bytes([byte]))
        await answer.write_eof()
        self.trickled += 1
        return answer

    async def send(self, request: web.Request) -> web.Response:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.bearers.append(bearer)
        message: dict[str, Any] = (await request.json())["message"]
        if bearer not in self.issued or bearer in self.refuse:
            return web.json_response({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status=401)
        if message["token"] in self.apns_broken:  # the project's APNs credentials are bad: the bearer was fine
            kind = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
            details = [{"@type": kind, "errorCode": "THIRD_PARTY_AUTH_ERROR"}]
            error = {"code": 401, "status": "UNAUTHENTICATED", "details": details}
            return web.json_response({"error": error}, status=401)
        return web.json_response({"name": f"projects/credited-test/messages/{message['token']}"})


@pytest.fixture
async def loopback() -> AsyncIterator[Loopback]:
    server = Loopback()
    app = web.Application()
    app.router.add_post("/token", server.token)
    app.router.add_post("/v1/projects/{project}/messages:send", server.send)
    async with serving(app) as port:
        server.port = port
        yield server


def key_file(tmp_path: Path, token_uri: str) -> Path:
    """A service-account JSON key as Google issues it, pointing its token_uri at the loopback endpoint."""
    pem = KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    info = {
        "type": "service_account",
        "project_id": "credited-test",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "1",
        "token_uri": token_uri,
    }
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(info))
    return path


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def poster() -> AsyncIterator[AiohttpPoster]:
    built = AiohttpPoster(timeout_s=5, policy=AddressPolicy(development=True))  # the FCM stand-in is on loopback
    yield built
    await built.close()


def channel_for(loopback: Loopback, tokens: ServiceAccountTokens, poster: AiohttpPoster) -> FcmChannel:
    return FcmChannel(f"{loopback.url}/v1/projects/{tokens.project_id}/messages:send", tokens, poster)


DEVICE = Target("fcm", "sub-1", "registration-token")


async def test_an_expired_fcm_token_is_refreshed_and_the_next_send_carries_the_fresh_bearer(
    loopback: Loopback, poster: AiohttpPoster, tmp_path: Path
) -> None:
    clock = Clock()
    tokens = ServiceAccountTokens.from_file(key_file(tmp_path, f"{loopback.url}/token"), clock=clock)
    channel = channel_for(loopback, tokens, poster)
    await channel.deliver(PAYLOAD, DEVICE)
    await channel.deliver(PAYLOAD, DEVICE)
    assert loopback.issued == ["token-1"] and loopback.bearers == ["token-1", "token-1"]  # minted once, reused
    clock.now += LIFETIME_S + 60  # token-1 has expired
    await channel.deliver(PAYLOAD, DEVICE)
    assert loopback.issued == ["token-1", "token-2"] and loopback.bearers[-1] == "token-2"


async def test_a_token_is_refreshed_before_it_expires_not_only_after(
    loopback: Loopback, poster: AiohttpPoster, tmp_path: Path
) -> None:
    clock = Clock()
    path = key_file(tmp_path, f"{loopback.url}/token")
    tokens = ServiceAccountTokens.from_file(path, clock=clock, refresh_margin_s=300)
    channel = channel_for(loopback, tokens, poster)
    await channel.deliver(PAYLOAD, DEVICE)
    clock.now += LIFETIME_S - 310  # 5 min 10 s left: still used
    await channel.deliver(PAYLOAD, DEVICE)
    clock.now += 20  # 4 min 50 s left, inside the margin: replaced while it is still valid
    await channel.deliver(PAYLOAD, DEVICE)
    assert loopback.bearers == ["token-1", "token-1", "token-2"]


async def test_concurrent_sends_wait_for_one_refresh_instead_of_each_minting(
    loopback: Loopback, poster: AiohttpPoster, tmp_path: Path
) -> None:
    tokens = ServiceAccountTokens.from_file(key_file(tmp_path, f"{loopback.url}/token"))
    channel = channel_for(loopback, tokens, poster)
    await asyncio.gather(*(channel.deliver(PAYLOAD, DEVICE) for _ in range(20)))
    assert loopback.issued == ["token-1"] and loopback.bearers == ["token-1"] * 20 and tokens.minted == 1


async def test_a_token_fcm_refuses_is_replaced_at_once_and_the_send_goes_through(
    loopback: Loopback, poster: AiohttpPoster, tmp_path: Path
) -> None:
    tokens = ServiceAccountTokens.from_file(key_file(tmp_path, f"{loopback.url}/token"))
    channel = channel_for(loopback, tokens, poster)
    loopback.refuse.add("token-1")  # revoked on Google's side before it expired
    await channel.deliver(PAYLOAD, DEVICE)
    assert loopback.bearers == ["token-1", "token-2"]


async def test_fcms_third_party_auth_error_keeps_the_bearer_and_sends_once_so_a_bad_apns_key_mints_nothing(
    loopback: Loopback, poster: AiohttpPoster, tmp_path: Path
) -> None:
    tokens = ServiceAccountTokens.from_file(key_file(tmp_path, f"{loopback.url}/token"))
    channel = channel_for(loopback, tokens, poster)
    loopback.apns_broken.add("ios-device")
    for _ in range(5):
        with pytest.raises(DeliveryFailed):
            await channel.deliver(PAYLOAD, Target("fcm", "sub-ios", "ios-device"))
    await channel.deliver(PAYLOAD, DEVICE)
    assert loopback.issued == ["token-1"] and loopback.bearers == ["token-1"] * 6  # one post each, one token


async def test_a_token_endpoint_that_cannot_be_reached_is_a_failure_worth_retrying(
    poster: AiohttpPoster, tmp_path: Path
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    tokens = ServiceAccountTokens.from_file(key_file(tmp_path, f"{nobody}/token"), timeout_s=1)
    channel = FcmChannel(f"{nobody}/v1/projects/p/messages:send", tokens, poster)
    with pytest.raises(DeliveryFailed) as failed:
        await channel.deliver(PAYLOAD, DEVICE)
    assert failed.value.retry and "could not be minted" in failed.value.reason


async def test_the_fcm_endpoint_is_the_service_accounts_project_unless_configured(
    loopback: Loopback, poster: AiohttpPoster, tmp_path: Path
) -> None:
    path = key_file(tmp_path, f"{loopback.url}/token")
    derived = fcm_channel(path, None, "", poster, ttl_s=60)
    assert (
        derived is not None and derived.endpoint == "https://fcm.googleapis.com/v1/projects/credited-test/messages:send"
    )
    configured = fcm_channel(path, f"{loopback.url}/v1/projects/x/messages:send", "", poster, ttl_s=60)
    assert configured is not None and configured.endpoint.startswith(loopback.url)
    assert fcm_channel(None, None, "", poster, ttl_s=60) is None


async def test_a_token_endpoint_that_trickles_its_answer_fails_the_delivery_at_the_mints_deadline_and_frees_the_next(
    loopback: Loopback, poster: AiohttpPoster, tmp_path: Path
) -> None:
    tokens = ServiceAccountTokens.from_file(key_file(tmp_path, f"{loopback.url}/token"), timeout_s=0.5)
    channel = channel_for(loopback, tokens, poster)
    loopback.trickle_s = 0.05  # each read well within 0.5 s; the whole answer takes about 4 s
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as failed:
        await channel.deliver(PAYLOAD, DEVICE)
    assert failed.value.retry and "0.5 s deadline" in failed.value.reason, failed.value.reason
    assert time.monotonic() - started < 1.5, "one deadline for the mint, not one per read"
    assert tokens.mints_running == 1, "the thread runs on"

    await channel.deliver(PAYLOAD, DEVICE)  # the lock is free: a mint of its own, answered at once
    assert loopback.issued == ["token-1", "token-2"] and loopback.bearers == ["token-2"]

    await eventually(lambda: loopback.trickled == 1 and tokens.mints_running == 0, timeout_s=30)
    await channel.deliver(PAYLOAD, DEVICE)
    assert loopback.bearers == ["token-2", "token-2"], "the late token-1 (expiring sooner) never replaces token-2"
    assert tokens.minted == 1


async def test_no_more_than_two_mints_run_at_once_when_each_outlives_its_deadline(
    loopback: Loopback, poster: AiohttpPoster, tmp_path: Path
) -> None:
    tokens = ServiceAccountTokens.from_file(key_file(tmp_path, f"{loopback.url}/token"), timeout_s=0.3)
    channel = channel_for(loopback, tokens, poster)
    reasons: list[str] = []
    for _ in range(3):
        loopback.trickle_s = 0.03
        with pytest.raises(DeliveryFailed) as failed:
            await channel.deliver(PAYLOAD, DEVICE)
        reasons.append(failed.value.reason)
    assert reasons[2] == "2 FCM access token mints are still running past their 0.3 s deadline", reasons
    assert loopback.issued == ["token-1", "token-2"], "the third delivery started none"
    await eventually(lambda: tokens.mints_running == 0, timeout_s=30)


async def test_a_mint_that_ends_past_its_deadline_never_replaces_the_token_the_endpoint_issued_after_it(
    loopback: Loopback, poster: AiohttpPoster, tmp_path: Path
) -> None:
    tokens = ServiceAccountTokens.from_file(key_file(tmp_path, f"{loopback.url}/token"), timeout_s=0.5)
    channel = channel_for(loopback, tokens, poster)
    loopback.trickle_s = 0.05  # token-1 issued now, its answer trickling for about 4 s: past the deadline
    with pytest.raises(DeliveryFailed):
        await channel.deliver(PAYLOAD, DEVICE)
    loopback.trickle_s = 0.001  # token-2 issued after token-1, with the same lifetime, answered within the deadline
    await channel.deliver(PAYLOAD, DEVICE)
    assert loopback.issued == ["token-1", "token-2"] and loopback.bearers == ["token-2"]
    await eventually(lambda: loopback.trickled == 2 and tokens.mints_running == 0, timeout_s=30)
    await channel.deliver(PAYLOAD, DEVICE)
    assert loopback.bearers[-1] == "token-2", "token-1 was issued first, so it expires first: never held over token-2"
