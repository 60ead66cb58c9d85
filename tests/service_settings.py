"""Settings for a service under test: the test's broker, database schema and topic prefix."""

from typing import Any, TypeVar

from servicekit.settings import ServiceSettings
from tests.conftest import Broker

S = TypeVar("S", bound=ServiceSettings)
STATUS_LINK_SECRET = "status-link-secret-of-the-tests-0123456789"
"""What services under test sign and check status links with (they run in production mode)."""


def settings_for(cls: type[S], broker: Broker, database_url: str, isolation: str, **extra: Any) -> S:
    return cls(
        kafka_bootstrap=broker.bootstrap,
        kafka_broker="tansu" if broker.kind == "embedded" else "apache",
        topic_prefix=f"{isolation}.",
        topic_partitions=3,
        database_url=database_url,
        db_schema=f"{isolation}_{cls.__module__.split('.')[0]}",
        identity_schema=f"{isolation}_identity",
        **{"status_link_secret": STATUS_LINK_SECRET, **extra},
    )
