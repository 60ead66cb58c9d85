"""Rotating an API key without downtime (`credited keys rotate`) on the real PostgreSQL: the new key keeps the old
one's name and scopes, and both are accepted until the overlap ends, after which the old one is refused."""

import asyncio
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import typer

from credited.keys import parse_duration
from servicekit.identity import KeyNameTaken, PostgresKeyStore, Scope
from tests.kafka_reader import eventually
from tests.servicekit.identity.integration.test_key_store import store  # noqa: F401 - the fixture
from tests.servicekit.identity.integration.test_keys_cli import authenticate, run

TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")


def test_both_keys_are_accepted_during_the_overlap_and_the_old_one_is_refused_once_it_ends(
    database_url: str, isolation: str
) -> None:
    db = ["--database-url", database_url, "--schema", isolation]
    scopes = ["--scope", "orders:write", "--scope", "orders:read"]
    code, out, err = run("keys", "create", "--name", "platform-backend", *scopes, "--expires", "90d", *db)
    assert code == 0, err
    old = out.strip()

    code, out, err = run("keys", "rotate", "platform-backend", "--overlap", "2s", *db)
    assert code == 0, err
    new = out.strip()
    assert new.startswith("ck_live_") and new != old
    said = " ".join(err.split())  # as wrapped for the terminal
    assert "still accepted until" in said and "shown only now" in said and "orders:read, orders:write" in said
    for key in (old, new):
        assert asyncio.run(authenticate(database_url, isolation, key)) == "platform-backend orders:read orders:write"
    code, out, _ = run("keys", "list", *db)
    assert code == 0
    old_row, new_row = (next(line for line in out.splitlines() if key[:14] in line) for key in (old, new))
    assert len(TIME.findall(old_row)) == 3, out  # created, expires, rotated
    assert len(TIME.findall(new_row)) == 2, out  # created, expires: 90 days after it was made, as the old one

    async def old_refused() -> bool:
        return await authenticate(database_url, isolation, old) == "this API key has expired"

    asyncio.run(eventually(old_refused, timeout_s=30))
    assert asyncio.run(authenticate(database_url, isolation, new)) == "platform-backend orders:read orders:write"


def test_rotating_a_name_without_a_current_key_is_an_error(database_url: str, isolation: str) -> None:
    db = ["--database-url", database_url, "--schema", isolation]
    code, out, err = run("keys", "rotate", "nobody", *db)
    assert (code, out) == (1, "") and "no current key named 'nobody'" in " ".join(err.split())
    assert run("keys", "create", "--name", "gone", "--scope", "orders:read", *db)[0] == 0
    assert run("keys", "revoke", "gone", *db)[0] == 0
    code, out, err = run("keys", "rotate", "gone", *db)
    assert (code, out) == (1, "") and "nothing to rotate" in " ".join(err.split())


async def test_a_second_key_of_the_name_is_refused_while_the_rotated_keys_successor_is_live(
    store: PostgresKeyStore,  # noqa: F811
) -> None:
    first, _ = await store.create("risk-team", [Scope.REVIEW_DECIDE])
    rotated = await store.rotate("risk-team", timedelta(hours=1))
    assert rotated is not None
    _, successor, _ = rotated
    with pytest.raises(KeyNameTaken, match="rotate it"):
        await store.create("risk-team", [Scope.REVIEW_DECIDE])
    revoked = await store.revoke("risk-team")  # the name's current key, not the rotated one
    assert revoked is not None and revoked.id == successor.id
    assert [k.id for k in await store.list_keys(include_revoked=False)] == [first.id]
    await store.create("risk-team", [Scope.REVIEW_DECIDE])
    assert (await store.revoke(first.id)) is not None  # a rotated key, by its id


async def test_rotating_twice_within_the_overlap_rotates_the_newest_and_the_first_keeps_its_earlier_expiry(
    store: PostgresKeyStore,  # noqa: F811
) -> None:
    await store.create("platform", [Scope.ORDERS_WRITE])
    first = await store.rotate("platform", timedelta(minutes=10))
    second = await store.rotate("platform", timedelta(hours=5))
    assert first is not None and second is not None
    (old, middle, _), (rotated_middle, newest, _) = first, second
    assert rotated_middle.id == middle.id and rotated_middle.rotated_at is not None
    by_id = {k.id: k for k in await store.list_keys()}
    assert by_id[old.id].expires_at == old.expires_at  # untouched by the second rotation
    assert old.expires_at is not None and rotated_middle.expires_at is not None
    assert old.expires_at < rotated_middle.expires_at
    assert rotated_middle.expires_at - rotated_middle.rotated_at == timedelta(hours=5)
    assert by_id[newest.id].rotated_at is None and newest.expires_at is None


async def test_the_successor_keeps_the_scopes_mode_and_lifetime_and_the_overlap_never_lengthens_a_life(
    store: PostgresKeyStore,  # noqa: F811
) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    created, _ = await store.create("dev-support", [Scope.SUPPORT_READ, Scope.SUPPORT_ACT], expires_at=soon, mode="dev")
    rotated = await store.rotate("dev-support", timedelta(hours=24))
    assert rotated is not None
    old, new, key = rotated
    assert key.startswith("ck_dev_") and new.name == "dev-support" and new.scopes == created.scopes
    assert old.expires_at == soon  # sooner than the overlap's end
    assert new.expires_at is not None and new.expires_at - new.created_at == soon - created.created_at

    later = datetime.now(UTC) + timedelta(days=400)
    rotated = await store.rotate("dev-support", timedelta(hours=1), expires_at=later)
    assert rotated is not None and rotated[1].expires_at == later


async def test_two_rotations_at_once_make_one_successor(
    store: PostgresKeyStore,  # noqa: F811
    database_url: str,
    isolation: str,
) -> None:
    await store.create("platform", [Scope.ORDERS_WRITE])
    # "At once" made sure: a third session holds the key's row until both rotations wait for it, so neither can
    # finish before the other has read the current key (gathered alone, one may commit before the other starts,
    # and rotating the successor it made is then a second rotation, not a race).
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute(
                f'SELECT 1 FROM "{isolation}_identity".api_keys WHERE name = $1 FOR UPDATE', "platform"
            )
            both_tasks = asyncio.gather(*(store.rotate("platform", timedelta(hours=1)) for _ in range(2)))

            async def both_wait() -> bool:
                waiting = await holder.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                    " AND query LIKE $1",
                    f"%{isolation}_identity%FOR UPDATE%",
                )
                return bool(waiting >= 2)

            await eventually(both_wait, timeout_s=30)
        both = await both_tasks
    finally:
        await holder.close()
    assert sorted(r is None for r in both) == [False, True]
    current = [k for k in await store.list_keys() if k.rotated_at is None]
    assert len(current) == 1


def test_an_overlap_is_a_duration_in_seconds_minutes_hours_or_days() -> None:
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("2s") == timedelta(seconds=2)
    for bad in ("0h", "1w", "soon", "-1h"):
        with pytest.raises(typer.BadParameter):
            parse_duration(bad)
