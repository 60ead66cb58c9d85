"""API keys on the real PostgreSQL: stored hashed, listed without the secret, revoked; and the authenticator
in front of the store: one round trip per cache period, a revocation honoured within it."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from servicekit.identity import Authenticator, KeyNameTaken, PostgresKeyStore, Scope, Unauthenticated
from servicekit.identity.keys import digest
from servicekit.postgres import create_pool


@pytest.fixture
async def store(database_url: str, isolation: str) -> AsyncIterator[PostgresKeyStore]:
    # The identity schema is shared by every service; a service's pool works inside its own schema.
    pool = await create_pool(database_url, f"{isolation}_payments")
    keys = PostgresKeyStore(pool, schema=f"{isolation}_identity")
    await keys.migrate()
    yield keys
    await pool.close()


async def test_a_created_key_is_stored_hashed_and_listed_by_its_prefix_only(
    store: PostgresKeyStore, database_url: str, isolation: str
) -> None:
    record, key = await store.create("platform-backend", [Scope.ORDERS_WRITE, Scope.ORDERS_READ])
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(f'SELECT * FROM "{isolation}_identity".api_keys')
    finally:
        await conn.close()
    assert row is not None
    assert key not in repr(dict(row)) and key[8:] not in repr(dict(row))
    assert bytes(row["digest"]) == digest(key)
    assert key.startswith(row["prefix"].rstrip("…"))
    (listed,) = await store.list_keys()
    assert listed == record and listed.scopes == {Scope.ORDERS_WRITE, Scope.ORDERS_READ}


async def test_migrating_twice_and_from_two_services_at_once_applies_once(store: PostgresKeyStore) -> None:
    again = await asyncio.gather(store.migrate(), store.migrate())
    assert again == [[], []]


async def test_a_live_name_is_unique_until_its_key_is_revoked(store: PostgresKeyStore) -> None:
    first, _ = await store.create("risk-team", [Scope.REVIEW_DECIDE])
    with pytest.raises(KeyNameTaken):
        await store.create("risk-team", [Scope.REVIEW_DECIDE])
    revoked = await store.revoke("risk-team")
    assert revoked is not None and revoked.id == first.id and revoked.revoked_at is not None
    assert await store.revoke("risk-team") is None
    second, _ = await store.create("risk-team", [Scope.REVIEW_DECIDE])
    assert [k.id for k in await store.list_keys(include_revoked=False)] == [second.id]
    assert {k.id for k in await store.list_keys()} == {first.id, second.id}


async def test_revoking_by_an_id_that_is_another_keys_name_revokes_the_key_with_that_id_only(
    store: PostgresKeyStore,
) -> None:
    target, _ = await store.create("platform", [Scope.ORDERS_WRITE])
    named_like_it, _ = await store.create(target.id, [Scope.ORDERS_WRITE])
    revoked = await store.revoke(target.id)
    assert revoked is not None and revoked.id == target.id
    assert [k.id for k in await store.list_keys(include_revoked=False)] == [named_like_it.id]


async def test_a_revoked_key_is_refused_within_the_cache_period_and_lookups_are_one_per_period(
    store: PostgresKeyStore,
) -> None:
    _, key = await store.create("support-agent", [Scope.SUPPORT_READ], expires_at=datetime.now(UTC) + timedelta(1))
    clock = [0.0]
    auth = Authenticator(store, ttl_s=5.0, monotonic=lambda: clock[0])
    for _ in range(500):
        assert (await auth.authenticate(key)).name == "support-agent"
        clock[0] += 0.009  # 4.5 s of requests: one cache period
    assert (store.round_trips, auth.served_from_cache) == (1, 499)
    await store.revoke("support-agent")  # by another process: this one is not told
    clock[0] = 4.99
    await auth.authenticate(key)  # read at 0 s, still trusted
    clock[0] = 5.0
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(key)
    assert store.round_trips == 2


async def test_many_concurrent_requests_with_a_fresh_key_cost_one_round_trip(store: PostgresKeyStore) -> None:
    _, key = await store.create("platform-backend", [Scope.ORDERS_WRITE])
    auth = Authenticator(store, ttl_s=5.0)
    callers = await asyncio.gather(*(auth.authenticate(key) for _ in range(200)))
    assert {c.name for c in callers} == {"platform-backend"}
    assert store.round_trips == 1
