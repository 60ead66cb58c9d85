"""The channels' wire formats and failure mapping, against a fake HTTP poster (no network)."""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from notifier.adapters.delivery import RetryPolicy
from notifier.adapters.fcm import FcmChannel, StaticBearer
from notifier.adapters.poster import Answer, retry_after_s
from notifier.adapters.webpush import VapidSigner, WebPushChannel, check_keys, endpoint_allowed
from notifier.ports import DeliveryFailed, Target
from servicekit.links import StatusLinks
from tests.notifier.push_service import Device, b64url, verify_vapid

PAYLOAD: dict[str, Any] = {
    "notification_id": "n1",
    "order_id": "ord_1",
    "user_id": "u1",
    "status": "credited",
    "title": "Top-up credited",
    "body": "648.00 CNY has been added to your wallet. Order: ord_1",
    "collapse_key": "ord_1",
    "push_topic": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "urgency": "high",
    "locale": "en",
    "changed_at": "2026-11-22T08:00:00+00:00",
}

LINKS = StatusLinks(["a-status-link-secret-for-unit-tests-0123"])


@dataclass
class Sent:
    url: str
    body: bytes
    headers: Mapping[str, str]


@dataclass
class FakePoster:
    """Answers every POST with `answer` and keeps what was sent."""

    answer: Answer = field(default_factory=lambda: Answer(201))
    sent: list[Sent] = field(default_factory=list)

    async def post(self, what: str, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        self.sent.append(Sent(url, body, dict(headers)))
        return self.answer


def device_target(device: Device, endpoint: str = "https://push.example/p/1") -> Target:
    return Target("webpush", "sub-1", endpoint, b64url(device.public_bytes), b64url(device.auth))


async def test_web_push_encrypts_for_the_subscription_and_signs_with_vapid() -> None:
    device, poster = Device("d"), FakePoster()
    signer = VapidSigner.generate("mailto:ops@example.com")
    channel = WebPushChannel(
        signer,
        poster,
        allowed_hosts=frozenset({"push.example"}),
        page_url="https://notify.example/",
        links=LINKS,
    )
    await channel.deliver(PAYLOAD, device_target(device))
    (request,) = poster.sent
    message = json.loads(device.decrypt(request.body))
    assert (message["title"], message["tag"]) == ("Top-up credited", "ord_1")
    link = urlsplit(message["url"])
    assert (link.scheme, link.netloc, link.path) == ("https", "notify.example", "/orders/ord_1")
    query = parse_qs(link.query)
    assert query["lang"] == ["en"]
    assert LINKS.verify("ord_1", query["token"][0]).user_id == PAYLOAD["user_id"]
    assert request.headers["topic"] == PAYLOAD["push_topic"] and request.headers["urgency"] == "high"
    assert request.headers["ttl"] == "86400" and request.headers["content-encoding"] == "aes128gcm"
    claims = verify_vapid(request.headers["authorization"], "https://push.example/p/1", signer.public_key)
    assert claims["aud"] == "https://push.example" and claims["sub"] == "mailto:ops@example.com"


@pytest.mark.parametrize(
    ("status", "retry", "gone", "retry_after"),
    [
        (500, True, False, None),
        (429, True, False, 7.0),
        (410, False, True, None),
        (404, False, True, None),
        (400, False, False, None),
        (413, False, False, None),
    ],
)
async def test_push_service_answers_map_to_retry_removal_or_a_final_failure(
    status: int, retry: bool, gone: bool, retry_after: float | None
) -> None:
    device = Device("d")
    headers = {"retry-after": "7"} if retry_after else {}
    channel = WebPushChannel(
        VapidSigner.generate("mailto:a@b.c"),
        FakePoster(Answer(status, headers)),
        allowed_hosts=frozenset({"push.example"}),
    )
    with pytest.raises(DeliveryFailed) as failed:
        await channel.deliver(PAYLOAD, device_target(device))
    assert (failed.value.retry, failed.value.gone, failed.value.retry_after_s) == (retry, gone, retry_after)


async def test_web_push_refuses_an_endpoint_outside_the_allowed_push_services_without_sending() -> None:
    poster = FakePoster()
    channel = WebPushChannel(VapidSigner.generate("mailto:a@b.c"), poster, allowed_hosts=frozenset({"x.example"}))
    with pytest.raises(DeliveryFailed) as failed:
        await channel.deliver(PAYLOAD, device_target(Device("d"), "https://10.0.0.1/internal"))
    assert not failed.value.retry and poster.sent == []


def test_only_https_endpoints_on_allowed_push_services_are_accepted() -> None:
    hosts = frozenset({"fcm.googleapis.com", "*.push.apple.com"})
    assert endpoint_allowed("https://fcm.googleapis.com/fcm/send/abc", hosts, allow_http=False)
    assert endpoint_allowed("https://web.push.apple.com/QO", hosts, allow_http=False)
    assert not endpoint_allowed("http://fcm.googleapis.com/fcm/send/abc", hosts, allow_http=False)
    assert not endpoint_allowed("https://evil.example/fcm.googleapis.com", hosts, allow_http=False)
    assert not endpoint_allowed("https://push.apple.com.evil.example/", hosts, allow_http=False)


def test_subscription_keys_must_be_a_p256_point_and_a_16_byte_secret() -> None:
    device = Device("d")
    check_keys(b64url(device.public_bytes), b64url(device.auth))
    with pytest.raises(ValueError, match="p256dh"):
        check_keys(b64url(b"\x04" + b"\x01" * 64), b64url(device.auth))
    with pytest.raises(ValueError, match="auth"):
        check_keys(b64url(device.public_bytes), b64url(b"short"))


def test_a_vapid_key_from_settings_is_the_same_key_in_pem_or_raw_form() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    raw = b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    assert (
        VapidSigner.from_setting(pem, "mailto:a@b.c").public_key
        == VapidSigner.from_setting(raw, "mailto:a@b.c").public_key
    )


async def test_fcm_sends_a_v1_message_with_the_order_as_collapse_key_and_the_configured_bearer() -> None:
    poster = FakePoster(Answer(200))
    channel = FcmChannel("https://fcm.example/v1/projects/p/messages:send", StaticBearer("tok"), poster)
    await channel.deliver(PAYLOAD, Target("fcm", "sub-1", "registration-token"))
    (request,) = poster.sent
    assert request.url == "https://fcm.example/v1/projects/p/messages:send"
    assert request.headers["authorization"] == "Bearer tok"
    message = json.loads(request.body)["message"]
    assert message["token"] == "registration-token"
    assert message["android"]["collapse_key"] == PAYLOAD["push_topic"] and message["android"]["priority"] == "HIGH"
    assert message["apns"]["headers"]["apns-collapse-id"] == PAYLOAD["push_topic"]
    assert all(isinstance(v, str) for v in message["data"].values())


@pytest.mark.parametrize(
    ("status", "body", "gone", "retry"),
    [
        (404, b'{"error":{"status":"NOT_FOUND","details":[{"errorCode":"UNREGISTERED"}]}}', True, False),
        (400, b'{"error":{"details":[{"errorCode":"UNREGISTERED"}]}}', True, False),
        (400, b'{"error":{"status":"INVALID_ARGUMENT"}}', False, False),
        (404, b'{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND"}}', False, False),
        (404, b"<html><title>Error 404 (Not Found)!!1</title></html>", False, False),
        (410, b"", False, False),
        (503, b"", False, True),
        (429, b"", False, True),
    ],
)
async def test_fcm_answers_map_to_removal_retry_or_failure(status: int, body: bytes, gone: bool, retry: bool) -> None:
    channel = FcmChannel("https://fcm.example/send", StaticBearer("tok"), FakePoster(Answer(status, body=body)))
    with pytest.raises(DeliveryFailed) as failed:
        await channel.deliver(PAYLOAD, Target("fcm", "sub-1", "registration-token"))
    assert (failed.value.gone, failed.value.retry) == (gone, retry)


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert retry_after_s("120") == 120.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:10 GMT", now=lambda: 1445412480.0) == 10.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap_and_retry_after_wins() -> None:
    policy = RetryPolicy(max_attempts=8, base_backoff_s=1.0, max_backoff_s=10.0)
    for attempts, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 10.0)]:
        delays = [policy.delay(attempts, None) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1
    assert policy.delay(3, 30.0) == 30.0


def test_a_retry_after_of_zero_or_past_is_lengthened_to_the_backoffs_fixed_half_at_most_a_minute() -> None:
    policy = RetryPolicy()
    assert [policy.delay(attempts, 0.0) for attempts in (1, 5, 10, 50)] == [0.25, 4.0, 60.0, 60.0]
    assert policy.delay(50, 900.0) == 900.0  # a longer one stands


def test_a_failing_receiver_is_retried_for_three_days_by_default_about_an_hour_apart_at_most() -> None:
    policy = RetryPolicy()
    day = 24 * 3600.0
    assert not policy.gives_up(attempts=200, age_s=2 * day, delay_s=policy.delay(200, None))
    assert all(policy.delay(200, None) <= 3600.0 for _ in range(50))
    assert not policy.gives_up(attempts=80, age_s=3 * day - 3600.0, delay_s=1800.0)
    assert policy.gives_up(attempts=80, age_s=3 * day - 600.0, delay_s=1800.0)  # the next try would be past 3 days
    # Attempts at the backoff's ceilings from the first failure: about a hundred over three days.
    attempts, age = 0, 0.0
    while not policy.gives_up(attempts + 1, age, delay := policy.delay(attempts + 1, None)):
        attempts, age = attempts + 1, age + delay
    assert 3 * day - 3600.0 <= age <= 3 * day and 70 <= attempts <= 160


def test_a_cap_of_attempts_gives_up_at_the_cap_whatever_the_time_left() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert not policy.gives_up(attempts=2, age_s=1.0, delay_s=1.0)
    assert policy.gives_up(attempts=3, age_s=1.0, delay_s=1.0)
