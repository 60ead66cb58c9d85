"""A Web Push service on loopback, for tests: it plays the browser vendor's push service and the browser.

Each subscription (a "device") has its own P-256 key pair and auth secret, made here with `cryptography`.
Every push is checked like a real push service would (VAPID, RFC 8292: the JWT's ES256 signature against
the key in the header, which must be the notifier's; audience, expiry, subject; TTL, Urgency, Topic) and
then decrypted like the browser would (RFC 8291 aes128gcm, written here from the RFC, independently of the
`http_ece` library the notifier encrypts with). A request that fails a check is answered 400 and recorded
in `errors`, which every test expects to stay empty.

Faults are scripted per device: answer a status (500, 429 with Retry-After, 410), answer slowly, or hold
the answer until released (to kill the notifier while the push service has the message but has not said so).
`device_view` is what the device shows: per Topic, the latest message (RFC 8030 replacement).
"""

import asyncio
import base64
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from credited.stack.processes import free_port
from servicekit.http import EmbeddedServer

TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


@dataclass
class Device:
    """The browser's side of one push subscription: its key pair and auth secret (RFC 8291 §2)."""

    name: str
    private_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def decrypt(self, body: bytes) -> bytes:
        """RFC 8291 §3.4 and RFC 8188 §2: header (salt, rs, keyid = the sender's public key), then records."""
        salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        sender_public = body[21 : 21 + idlen]
        records = body[21 + idlen :]
        sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_public)
        ecdh_secret = self.private_key.exchange(ec.ECDH(), sender)
        key_info = b"WebPush: info\x00" + self.public_bytes + sender_public
        ikm = _hkdf(self.auth, ecdh_secret, key_info, 32)
        cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
        nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
        plaintext = b""
        for seq, start in enumerate(range(0, len(records), rs)):
            iv = (int.from_bytes(nonce, "big") ^ seq).to_bytes(12, "big")
            padded = AESGCM(cek).decrypt(iv, records[start : start + rs], None)
            data = padded.rstrip(b"\x00")
            last = start + rs >= len(records)
            if data[-1:] != (b"\x02" if last else b"\x01"):
                raise ValueError("bad padding delimiter")
            plaintext += data[:-1]
        return plaintext


def verify_vapid(authorization: str, endpoint: str, expected_key: str | None) -> dict[str, Any]:
    """RFC 8292 §2-3: `vapid t=<JWT>, k=<key>`; the ES256 signature must verify with k. Returns the claims."""
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise ValueError(f"authorization scheme {scheme!r} is not vapid")
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    token, key = parts["t"], parts["k"]
    if expected_key is not None and key != expected_key:
        raise ValueError("VAPID key is not the application server's key")
    header_b64, claims_b64, signature_b64 = token.split(".")
    header = orjson.loads(unb64url(header_b64))
    if header.get("alg") != "ES256":
        raise ValueError(f"JWT alg {header.get('alg')!r} is not ES256")
    signature = unb64url(signature_b64)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("VAPID JWT signature does not verify") from None
    claims: dict[str, Any] = orjson.loads(unb64url(claims_b64))
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(endpoint))
    if claims.get("aud") != origin:
        raise ValueError(f"VAPID aud {claims.get('aud')!r} is not {origin!r}")
    if not time.time() < claims["exp"] <= time.time() + 24 * 3600:
        raise ValueError("VAPID exp is not within the next 24 hours")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise ValueError("VAPID sub is not a mailto: or https: contact")
    return claims


@dataclass(frozen=True)
class Fault:
    """One scripted answer: a status (with Retry-After), an answer after `delay_s`, or `hold` until released.
    A delayed or held answer is a success the notifier may not hear about: the message is already accepted."""

    status: int = 201
    retry_after: str | None = None
    delay_s: float = 0.0
    hold: bool = False


@dataclass(frozen=True)
class Push:
    device: str
    message: dict[str, Any]
    topic: str
    urgency: str
    ttl: int
    at: float


@dataclass
class PushService:
    """Runs on 127.0.0.1 inside the test's event loop."""

    vapid_public_key: str | None = None
    port: int = field(default_factory=free_port)
    devices: dict[str, Device] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    received: list[Push] = field(default_factory=list)
    attempts: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    held: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    on_push: Callable[[Push], None] | None = None
    _server: EmbeddedServer | None = None
    _task: "asyncio.Task[None] | None" = None

    def endpoint(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/push/{name}"

    def subscribe(self, name: str) -> dict[str, Any]:
        """A new device, as the browser's PushSubscription.toJSON() would describe it."""
        device = self.devices[name] = Device(name)
        return {
            "channel": "webpush",
            "endpoint": self.endpoint(name),
            "keys": {"p256dh": b64url(device.public_bytes), "auth": b64url(device.auth)},
        }

    def script(self, name: str, *faults: Fault) -> None:
        self.faults.setdefault(name, []).extend(faults)

    def messages(self, device: str) -> list[dict[str, Any]]:
        return [p.message for p in self.received if p.device == device]

    def device_view(self, device: str) -> dict[str, dict[str, Any]]:
        """What the device shows: the latest message per Topic (a newer one replaces an older one)."""
        view: dict[str, dict[str, Any]] = {}
        for push in self.received:
            if push.device == device:
                view[push.topic] = push.message
        return view

    async def _push(self, request: Request) -> Response:
        name = request.path_params["device"]
        self.attempts.setdefault(name, []).append(time.monotonic())
        if name in self.gone or name not in self.devices:
            return Response(status_code=410)
        scripted = self.faults.get(name)
        fault = scripted.pop(0) if scripted else Fault()
        if fault.status >= 300:
            headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
            return Response(status_code=fault.status, headers=headers)
        try:
            push = self._accept(name, request, await request.body())
        except (ValueError, KeyError, IndexError) as exc:
            self.errors.append(f"{name}: {exc!r}")
            return Response(f"rejected: {exc}", status_code=400)
        self.received.append(push)
        if self.on_push is not None:
            self.on_push(push)
        if fault.hold:
            self.held += 1
            await self.release.wait()
        await asyncio.sleep(fault.delay_s)
        return Response(status_code=201, headers={"location": f"/message/{len(self.received)}"})

    def _accept(self, name: str, request: Request, body: bytes) -> Push:
        headers = request.headers
        if headers.get("content-encoding") != "aes128gcm":
            raise ValueError(f"content-encoding {headers.get('content-encoding')!r}")
        topic, urgency = headers.get("topic", ""), headers.get("urgency", "normal")
        if not TOPIC.match(topic):
            raise ValueError(f"topic {topic!r} is not 1-32 URL-safe base64 characters")
        if urgency not in ("very-low", "low", "normal", "high"):
            raise ValueError(f"urgency {urgency!r}")
        verify_vapid(headers["authorization"], self.endpoint(name), self.vapid_public_key)
        message = orjson.loads(self.devices[name].decrypt(body))
        return Push(name, message, topic, urgency, int(headers["ttl"]), time.monotonic())

    async def start(self) -> None:
        app = Starlette(routes=[Route("/push/{device}", self._push, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="off", loop="none"
        )
        self._server = EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:  # uvicorn exposes a flag, not an event
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.release.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
