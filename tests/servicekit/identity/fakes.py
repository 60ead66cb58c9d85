"""An in-memory key lookup and clocks for the authenticator's and the guard's unit tests."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from servicekit.identity.keys import KeyMode, KeyRecord, digest, display_prefix, mint_key, new_key_id
from servicekit.identity.scopes import Scope

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class Clocks:
    """A monotonic clock and a wall clock that move together, only when told."""

    elapsed: float = 0.0

    def monotonic(self) -> float:
        return self.elapsed

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.elapsed)

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


@dataclass
class InMemoryKeys:
    """Keys by digest; counts every lookup as the database round trip it stands for."""

    records: dict[bytes, KeyRecord] = field(default_factory=dict)
    round_trips: int = 0

    def add(
        self, name: str, *scopes: Scope, expires_at: datetime | None = None, mode: KeyMode = "live"
    ) -> tuple[KeyRecord, str]:
        key = mint_key(mode)
        record = KeyRecord(new_key_id(), name, display_prefix(key), frozenset(scopes), T0, expires_at)
        self.records[digest(key)] = record
        return record, key

    def revoke(self, key: str, at: datetime) -> None:
        old = self.records[digest(key)]
        self.records[digest(key)] = KeyRecord(
            old.id, old.name, old.prefix, old.scopes, old.created_at, old.expires_at, revoked_at=at
        )

    async def find(self, key_digest: bytes) -> KeyRecord | None:
        self.round_trips += 1
        return self.records.get(key_digest)
