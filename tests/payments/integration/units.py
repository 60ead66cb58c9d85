"""payments' unit of work on a test's own pool (the `payments_pool` fixture of this folder's conftest)."""

from collections.abc import Callable

import asyncpg

from payments.adapters.postgres import PostgresPayments
from servicekit.uow import no_relay


def units_of_work(pool: asyncpg.Pool) -> Callable[[], PostgresPayments]:
    """payments' unit of work on `pool`, its outbox left for the test to read (no relay)."""
    return lambda: PostgresPayments(pool, producer="payments", topic_prefix="", on_commit=no_relay)
