"""The notifier's outgoing connections under the address guard, against real HTTP servers on loopback:
a push endpoint on 127.0.0.1 refused, a host name that resolves to loopback refused at connect time, and a
redirect to the cloud metadata address refused on the way, with the server counting what reached it."""

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from servicekit.netguard import AddressPolicy, AddressRefused, check_url, guarded_session, refused_by_guard
from tests.loopback_http import serving

PRODUCTION = AddressPolicy()
DEVELOPMENT = AddressPolicy(development=True)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[int, list[str]]]:
    """A loopback HTTP server: /push answers 201, /to-metadata and /to-metadata-v6 redirect to the cloud
    metadata service, /to-push redirects to /push. Yields its port and the paths it was asked for."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        targets = {
            "/to-metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "/to-metadata-v6": "http://[fd00:ec2::254]/latest/meta-data/",
            "/to-push": "/push",
        }
        if request.path in targets:
            raise web.HTTPFound(targets[request.path])
        return web.Response(status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serving(app) as port:
        yield port, seen


async def post(policy: AddressPolicy, url: str) -> int:
    async with (
        guarded_session(policy, timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(url, data=b"{}") as answer,
    ):
        return answer.status


async def refusal(policy: AddressPolicy, url: str) -> str:
    try:
        await post(policy, url)
    except (aiohttp.ClientError, OSError) as exc:
        refused = refused_by_guard(exc)
        assert refused is not None, f"failed, but not by the guard: {exc!r}"
        return str(refused)
    raise AssertionError(f"{url} was reached")


async def test_a_push_endpoint_on_127_0_0_1_is_refused_and_never_reached(receiver) -> None:  # type: ignore[no-untyped-def]
    port, seen = receiver
    with pytest.raises(AddressRefused, match=r"127\.0\.0\.1 is a loopback address"):
        await check_url(f"https://127.0.0.1:{port}/push", PRODUCTION)
    assert "127.0.0.1 is a loopback address" in await refusal(PRODUCTION, f"https://127.0.0.1:{port}/push")
    assert seen == []


async def test_a_host_name_resolving_to_loopback_is_refused_at_connect_time(receiver) -> None:  # type: ignore[no-untyped-def]
    port, seen = receiver
    with pytest.raises(AddressRefused, match="loopback"):
        await check_url(f"https://localhost:{port}/push", PRODUCTION)
    # The URL names no address: only the connector, seeing where the socket would go, can refuse it.
    assert "loopback address" in await refusal(PRODUCTION, f"https://localhost:{port}/push")
    assert seen == []


async def test_a_redirect_to_the_cloud_metadata_address_is_refused(receiver) -> None:  # type: ignore[no-untyped-def]
    port, seen = receiver
    # Development mode lets the first request reach the loopback receiver; metadata stays refused.
    assert await post(DEVELOPMENT, f"http://127.0.0.1:{port}/push") == 201
    refused = await refusal(DEVELOPMENT, f"http://127.0.0.1:{port}/to-metadata")
    assert "169.254.169.254 is a cloud metadata address" in refused
    refused = await refusal(DEVELOPMENT, f"http://127.0.0.1:{port}/to-metadata-v6")
    assert "fd00:ec2::254 is a cloud metadata address" in refused
    assert seen == ["/push", "/to-metadata", "/to-metadata-v6"]


async def test_a_redirect_to_an_allowed_address_is_followed(receiver) -> None:  # type: ignore[no-untyped-def]
    port, seen = receiver
    assert await post(DEVELOPMENT, f"http://localhost:{port}/to-push") == 201
    assert seen == ["/to-push", "/push"]


async def test_plain_http_is_refused_outside_development_mode(receiver) -> None:  # type: ignore[no-untyped-def]
    port, seen = receiver
    assert await refusal(PRODUCTION, f"http://example.com:{port}/push") == (
        f"http://example.com:{port}/push: plain http is refused outside development mode"
    )
    assert seen == []


async def test_a_url_that_does_not_parse_is_refused_naming_why_not_raised_as_a_value_error() -> None:
    for url in ("https://push.example:99999/x", "https://push.example:port/x", "https://[::1/x"):
        with pytest.raises(AddressRefused, match="not a URL"):
            await check_url(url, PRODUCTION)
