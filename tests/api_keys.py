"""API keys for tests that call the services' HTTP APIs like any client: made in the test's identity schema."""

import uuid

from servicekit.identity import PostgresKeyStore, Scope


async def bearer(keys: PostgresKeyStore, *scopes: Scope) -> dict[str, str]:
    """The Authorization header of a new key with `scopes` (every scope when none is named)."""
    _, key = await keys.create(f"test-{uuid.uuid4().hex[:8]}", scopes or set(Scope))
    return {"Authorization": f"Bearer {key}"}
