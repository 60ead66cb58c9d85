"""The authenticator: keys checked against their records, read once per cache period, revocation honoured
within it, expiry exact, malformed keys never looked up."""

import asyncio
from datetime import timedelta

import pytest

from servicekit.identity import Authenticator, Scope, Unauthenticated
from servicekit.identity.keys import digest, display_prefix, looks_like_key, mint_key
from tests.servicekit.identity.fakes import T0, Clocks, InMemoryKeys


def authenticator(
    keys: InMemoryKeys, clocks: Clocks, ttl_s: float = 5.0, development_keys: bool = True
) -> Authenticator:
    return Authenticator(
        keys, ttl_s=ttl_s, monotonic=clocks.monotonic, now=clocks.now, development_keys=development_keys
    )


async def refusal(auth: Authenticator, key: str) -> str:
    with pytest.raises(Unauthenticated) as refused:
        await auth.authenticate(key)
    return refused.value.detail


def test_a_minted_key_has_its_shape_and_only_its_prefix_is_shown() -> None:
    key = mint_key()
    assert looks_like_key(key) and key.startswith("ck_live_") and len(key) == len("ck_live_") + 40
    shown = display_prefix(key)
    assert key.startswith(shown.rstrip("…")) and len(shown.rstrip("…")) == len("ck_live_") + 6
    assert mint_key() != key and len(digest(key)) == 32


async def test_a_valid_key_stands_for_its_name_and_scopes() -> None:
    keys, clocks = InMemoryKeys(), Clocks()
    record, key = keys.add("platform-backend", Scope.ORDERS_WRITE, Scope.ORDERS_READ)
    caller = await authenticator(keys, clocks).authenticate(key)
    assert (caller.key_id, caller.name, caller.scopes) == (record.id, "platform-backend", record.scopes)


async def test_a_thousand_requests_in_one_cache_period_cost_one_lookup() -> None:
    keys, clocks = InMemoryKeys(), Clocks()
    _, key = keys.add("platform-backend", Scope.ORDERS_WRITE)
    auth = authenticator(keys, clocks, ttl_s=5.0)
    for _ in range(1000):
        await auth.authenticate(key)
        clocks.advance(0.004)  # 4 s in all: inside the period
    assert keys.round_trips == 1
    assert (auth.looked_up, auth.served_from_cache) == (1, 999)
    clocks.advance(1.0)
    await auth.authenticate(key)
    assert keys.round_trips == 2


async def test_a_revoked_key_is_refused_once_the_cache_period_has_passed_and_not_later() -> None:
    keys, clocks = InMemoryKeys(), Clocks()
    _, key = keys.add("support-agent", Scope.SUPPORT_READ)
    auth = authenticator(keys, clocks, ttl_s=5.0)
    await auth.authenticate(key)
    keys.revoke(key, at=clocks.now())
    clocks.advance(4.9)
    await auth.authenticate(key)  # still trusted: read 4.9 s ago
    clocks.advance(0.1)
    assert await refusal(auth, key) == "this API key was revoked"


async def test_a_key_revoked_by_a_database_clock_ahead_of_this_process_is_refused_once_read() -> None:
    keys, clocks = InMemoryKeys(), Clocks()
    _, key = keys.add("support-agent", Scope.SUPPORT_READ)
    keys.revoke(key, at=clocks.now() + timedelta(seconds=30))  # the database's now() runs 30 s ahead
    auth = authenticator(keys, clocks, ttl_s=5.0)
    assert await refusal(auth, key) == "this API key was revoked"


async def test_an_expired_key_is_refused_the_moment_it_expires_even_when_cached() -> None:
    keys, clocks = InMemoryKeys(), Clocks()
    _, key = keys.add("contractor", Scope.ORDERS_READ, expires_at=T0 + timedelta(seconds=2))
    auth = authenticator(keys, clocks, ttl_s=60.0)
    await auth.authenticate(key)
    clocks.advance(2.0)
    assert await refusal(auth, key) == "this API key has expired"
    assert keys.round_trips == 1


@pytest.mark.parametrize(
    "value", ["", "Bearer", "ck_live_short", "sk_live_" + "a" * 40, "ck_live_" + "a" * 39 + "!", "ck_prod_" + "a" * 40]
)
async def test_a_malformed_key_is_refused_without_a_lookup(value: str) -> None:
    keys = InMemoryKeys()
    assert await refusal(authenticator(keys, Clocks()), value) == "the bearer value is not a credited API key"
    assert keys.round_trips == 0


async def test_an_unknown_key_is_refused_and_asking_again_in_the_period_costs_nothing() -> None:
    keys = InMemoryKeys()
    auth = authenticator(keys, Clocks())
    unknown = mint_key()
    for _ in range(50):
        assert await refusal(auth, unknown) == "unknown API key"
    assert keys.round_trips == 1


async def test_concurrent_requests_with_an_uncached_key_share_one_lookup() -> None:
    class SlowKeys(InMemoryKeys):
        async def find(self, key_digest: bytes):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.05)
            return await super().find(key_digest)

    keys, clocks = SlowKeys(), Clocks()
    _, key = keys.add("platform-backend", Scope.ORDERS_WRITE)
    auth = authenticator(keys, clocks)
    callers = await asyncio.gather(*(auth.authenticate(key) for _ in range(100)))
    assert {c.name for c in callers} == {"platform-backend"}
    assert keys.round_trips == 1


async def test_the_cache_stays_bounded_and_drops_the_least_recently_used_key() -> None:
    keys, clocks = InMemoryKeys(), Clocks()
    auth = Authenticator(keys, ttl_s=60, max_entries=3, monotonic=clocks.monotonic, now=clocks.now)
    minted = [keys.add(f"k{i}", Scope.ORDERS_READ)[1] for i in range(4)]
    for key in minted[:3]:
        await auth.authenticate(key)
    await auth.authenticate(minted[0])  # k0 used again: k1 is now the least recent
    await auth.authenticate(minted[3])  # pushes k1 out
    assert keys.round_trips == 4
    await auth.authenticate(minted[0])
    assert keys.round_trips == 4
    await auth.authenticate(minted[1])
    assert keys.round_trips == 5


async def test_a_development_key_is_refused_without_a_lookup_where_development_keys_are_off() -> None:
    keys, clocks = InMemoryKeys(), Clocks()
    _, key = keys.add("credited-up", *Scope, mode="dev")
    assert key.startswith("ck_dev_")
    assert (await authenticator(keys, clocks).authenticate(key)).name == "credited-up"
    production = authenticator(keys, clocks, development_keys=False)
    assert (
        await refusal(production, key) == "a development key (ck_dev_) is accepted only where CREDITED_ENV=development"
    )
    assert keys.round_trips == 1  # the development authenticator's only
    _, live = keys.add("platform-backend", Scope.ORDERS_READ)
    assert (await production.authenticate(live)).name == "platform-backend"
