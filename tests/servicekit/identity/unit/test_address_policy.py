"""Which addresses and URLs the notifier may reach, in production and in development mode."""

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from servicekit.netguard import AddressPolicy, AddressRefused, GuardedResolver

PRODUCTION = AddressPolicy()
DEVELOPMENT = AddressPolicy(development=True)

NEVER = [
    "169.254.169.254",
    "169.254.170.2",
    "fd00:ec2::254",
    "100.100.100.200",
    "169.254.1.1",
    "fe80::1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",  # NAT64 spelling of 169.254.169.254
    "0.0.0.0",
    "224.0.0.1",
]
LOCAL = ["127.0.0.1", "127.8.8.8", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "fc00::1", "::ffff:127.0.0.1"]
PUBLIC = ["8.8.8.8", "203.0.114.1", "2001:4860:4860::8888", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", NEVER)
def test_metadata_link_local_and_non_unicast_addresses_are_refused_in_every_mode(address: str) -> None:
    ip = ipaddress.ip_address(address)
    wide_open = AddressPolicy(development=True, allow=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")))
    for policy in (PRODUCTION, DEVELOPMENT, wide_open):
        assert policy.address_refusal(ip) is not None, (address, policy)


@pytest.mark.parametrize("address", LOCAL)
def test_loopback_and_private_addresses_are_refused_in_production_and_allowed_in_development(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert PRODUCTION.address_refusal(ip) is not None
    assert DEVELOPMENT.address_refusal(ip) is None


def test_cgnat_addresses_are_refused_in_production() -> None:
    assert (
        PRODUCTION.address_refusal(ipaddress.ip_address("100.64.0.1")) == "100.64.0.1 is a private or reserved address"
    )


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert PRODUCTION.address_refusal(ipaddress.ip_address(address)) is None


def test_an_allow_list_opens_a_named_private_network_in_production_and_nothing_else() -> None:
    policy = AddressPolicy.for_environment("production", ["10.20.0.0/16"])
    assert policy.address_refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert policy.address_refusal(ipaddress.ip_address("10.21.3.4")) is not None


@pytest.mark.parametrize(
    ("url", "production", "development"),
    [
        ("https://fcm.googleapis.com/fcm/send/x", None, None),
        ("http://fcm.googleapis.com/fcm/send/x", "plain http is refused outside development mode", None),
        ("https://127.0.0.1:8443/push", "127.0.0.1 is a loopback address", None),
        ("https://[::1]/push", "::1 is a loopback address", None),
        ("http://169.254.169.254/latest/meta-data/", "plain http", "169.254.169.254 is a cloud metadata address"),
        ("https://[fd00:ec2::254]/", "fd00:ec2::254 is a cloud metadata address", "fd00:ec2::254 is a cloud"),
        ("ftp://example.com/x", "ftp URL is not a web address", "ftp URL is not a web address"),
    ],
)
def test_urls_are_refused_by_scheme_and_by_an_address_written_in_them(
    url: str, production: str | None, development: str | None
) -> None:
    for policy, expected in ((PRODUCTION, production), (DEVELOPMENT, development)):
        refusal = policy.url_refusal(URL(url))
        assert (refusal is None) == (expected is None), (url, policy, refusal)
        if expected is not None:
            assert refusal is not None and refusal.startswith(expected)


class FixedResolver(AbstractResolver):
    """Answers every name with the same addresses, as a DNS server under someone else's control could."""

    def __init__(self, *addresses: str) -> None:
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0) for a in self._addresses
        ]

    async def close(self) -> None:
        pass


async def test_a_name_resolving_to_public_and_private_addresses_is_reached_only_on_the_public_one() -> None:
    resolver = GuardedResolver(PRODUCTION, FixedResolver("10.0.0.5", "8.8.8.8", "169.254.169.254"))
    assert [r["host"] for r in await resolver.resolve("push.example.com", 443)] == ["8.8.8.8"]


async def test_a_name_resolving_only_to_refused_addresses_is_refused_with_the_reasons() -> None:
    resolver = GuardedResolver(PRODUCTION, FixedResolver("127.0.0.1", "169.254.169.254"))
    with pytest.raises(AddressRefused, match=r"169\.254\.169\.254 is a cloud metadata address") as refused:
        await resolver.resolve("rebound.example.com", 443)
    assert "rebound.example.com resolves only to refused addresses" in str(refused.value)
