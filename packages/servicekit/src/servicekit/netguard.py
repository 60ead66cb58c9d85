"""Where the notifier may connect: never to our own network or the cloud's metadata service.

Push endpoints and webhook URLs come from outside (a user's browser, the platform's settings), so a URL that
names a loopback, private, link-local, CGNAT or metadata address would make the notifier a way into the
network it runs in (SSRF). The check happens where it cannot be dodged:

- at connect time (`guarded_connector`): a host name is resolved once and only its allowed addresses are
  connected to, and the exact address each socket is about to connect to is checked again (aiohttp's
  `socket_factory`), so a name that resolves to a forbidden address, or is re-bound to one after an earlier
  check (DNS rebinding), never gets a connection;
- on every request of a redirect chain (`guard_middleware`), for the scheme and an address written in the
  URL, so a public receiver answering 302 to http://169.254.169.254/ is refused before any connection;
- when a URL is registered (`check_url`), to refuse it with a reason the caller sees.

Development mode (CREDITED_ENV=development) allows loopback and private addresses and plain http, for the
local stack's receivers; cloud metadata and the rest of link-local are refused in every mode.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Tencent Cloud, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
    )
)
"""Cloud metadata services: where a cloud hands out the machine's credentials. Refused in every mode."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(OSError):
    """A URL or address the notifier must not connect to, with the reason."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which destinations are allowed: public addresses over https; more in development mode or by an
    explicit allow-list (a receiver on a private network the operator names), never metadata."""

    development: bool = False
    allow: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def for_environment(cls, environment: str, allow: Iterable[str] = ()) -> "AddressPolicy":
        return cls(environment == "development", tuple(ipaddress.ip_network(n) for n in allow))

    def address_refusal(self, address: IPAddress) -> str | None:
        """Why `address` is refused, or None."""
        address = _unwrapped(address)
        if address in METADATA:
            return f"{address} is a cloud metadata address"
        if address.is_link_local:
            return f"{address} is link-local"
        if address.is_multicast or address.is_unspecified:
            return f"{address} is not a unicast address"
        if any(address in network for network in self.allow):
            return None
        if self.development and (address.is_loopback or address.is_private):
            return None
        if not address.is_global:
            kind = "loopback" if address.is_loopback else "private or reserved"
            return f"{address} is a {kind} address"
        return None

    def url_refusal(self, url: URL) -> str | None:
        """Why `url` is refused before resolving it (scheme, or an address written in it), or None."""
        if url.scheme not in ("https", "http") or not url.host:
            return f"{url.scheme or 'a relative'} URL is not a web address"
        if url.scheme == "http" and not self.development:
            return "plain http is refused outside development mode"
        try:
            address = ipaddress.ip_address(url.host.strip("[]"))
        except ValueError:
            return None  # a host name: checked on the addresses it resolves to, when connecting
        return self.address_refusal(address)

    def check_address(self, address: IPAddress) -> None:
        refusal = self.address_refusal(address)
        if refusal is not None:
            raise AddressRefused(refusal)


def _unwrapped(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address, which is where the packets go."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


class GuardedResolver(AbstractResolver):
    """Resolves as aiohttp does, keeping only the addresses the policy allows: a name that resolves to a
    public and a private address is reached on the public one; one with none allowed is refused."""

    def __init__(self, policy: AddressPolicy, resolver: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._resolver = resolver or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        refusals = {r["host"]: self._policy.address_refusal(_ip(r["host"])) for r in found}
        allowed = [r for r in found if refusals[r["host"]] is None]
        if not allowed:
            raise AddressRefused(f"{host} resolves only to refused addresses: {'; '.join(map(str, refusals.values()))}")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%")[0])  # an IPv6 zone (fe80::1%eth0) is not part of the address


def guarded_connector(policy: AddressPolicy, **options: Any) -> aiohttp.TCPConnector:
    """An aiohttp connector that resolves through GuardedResolver and checks, at connect time, the address
    each socket is about to connect to (an address written in a URL is never resolved, so only this sees it)."""

    def socket_for(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        policy.check_address(_ip(str(sockaddr[0])))
        return socket.socket(family=family, type=type_, proto=proto)

    return aiohttp.TCPConnector(socket_factory=socket_for, resolver=GuardedResolver(policy), **options)


def guard_middleware(policy: AddressPolicy) -> aiohttp.ClientMiddlewareType:
    """An aiohttp client middleware checking the URL of every request, redirects included."""

    async def guard(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        refusal = policy.url_refusal(request.url)
        if refusal is not None:
            raise AddressRefused(f"{request.url.with_query(None)}: {refusal}")
        return await handler(request)

    return guard


def guarded_session(policy: AddressPolicy, **options: Any) -> aiohttp.ClientSession:
    """A ClientSession with both guards; `connector_options` go to the connector (limit, keepalive_timeout)."""
    connector = guarded_connector(policy, **options.pop("connector_options", {}))
    return aiohttp.ClientSession(connector=connector, middlewares=(guard_middleware(policy),), **options)


def refused_by_guard(exc: BaseException) -> AddressRefused | None:
    """The guard's refusal behind an aiohttp error (aiohttp wraps it in a ClientOSError), or None."""
    seen: BaseException | None = exc
    for _ in range(5):  # the refusal is at most a wrapper or two down
        if seen is None or isinstance(seen, AddressRefused):
            return seen
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return None


async def check_url(url: str, policy: AddressPolicy) -> None:
    """Refuse (AddressRefused) a URL being registered: one that does not parse (a port out of range), its scheme,
    and every address its host resolves to."""
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise AddressRefused(f"not a URL: {exc}") from None
    refusal = policy.url_refusal(parsed)
    if refusal is not None:
        raise AddressRefused(refusal)
    assert parsed.host is not None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AddressRefused(f"{parsed.host} does not resolve: {exc.strerror}") from None
    for *_, sockaddr in infos:
        policy.check_address(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
