"""Every writer of the outbox says what to wake when it commits: the relay publishes its rows at once. A writer
that said nothing would leave them to the relay's fallback poll, up to a second each, with nothing failing."""

from collections.abc import Callable
from typing import Any

import pytest

from ledger.adapters.parking import ParkedRetrySweeper
from payments.adapters.orders import PostgresOrderBook
from servicekit.infrastructure import Infrastructure
from servicekit.settings import ServiceSettings
from servicekit.uow import PostgresUnitOfWork


@pytest.mark.parametrize("writer", [PostgresUnitOfWork, PostgresOrderBook])
def test_a_writer_of_the_outbox_cannot_be_made_without_naming_what_to_wake(writer: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match="on_commit"):
        writer(None, producer="test", topic_prefix="")


def test_the_ledgers_parked_retry_sweeper_cannot_be_made_without_naming_what_to_wake() -> None:
    with pytest.raises(TypeError, match="on_commit"):
        ParkedRetrySweeper(None, None, park_s=1.0, interval_s=1.0)  # type: ignore[arg-type, call-arg]


class Made:
    """Stands in for a unit of work: keeps what it was made with."""

    def __init__(self, pool: object, **options: Any) -> None:
        self.pool, self.options = pool, options


async def test_the_infrastructures_writers_are_on_its_pool_and_wake_its_relay() -> None:
    # Not connected: the pool connects nothing until first used, and nothing here uses it.
    settings = ServiceSettings(topic_prefix="t1.")  # type: ignore[call-arg]
    infra = await Infrastructure.open("ledger", settings, None, connect=False)
    try:
        make = infra.outbox_writers(Made, schema="s")
        first, second = make(), make()
        assert first is not second  # a new one each time, as each consumed batch needs
        assert first.pool is infra.pool
        assert first.options == {
            "producer": "ledger",
            "topic_prefix": "t1.",
            "on_commit": infra.relay.wake,
            "schema": "s",
        }
    finally:
        await infra.close()
