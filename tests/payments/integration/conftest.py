"""payments' own schema on the test PostgreSQL, for the tests that drive its adapters without the service."""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from payments.bootstrap import MIGRATIONS
from servicekit.postgres import create_pool, migrate


@pytest.fixture
async def payments_pool(database_url: str, isolation: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on payments' schema of this test, migrated."""
    pool = await create_pool(database_url, f"{isolation}_payments", min_size=2, max_size=10)
    await migrate(pool, MIGRATIONS)
    yield pool
    await pool.close()
