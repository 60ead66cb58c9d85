"""ledger settings: env prefix LEDGER_ (plus the shared KAFKA_BOOTSTRAP, DATABASE_URL, ...)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore", frozen=True)

    http_port: int = 8102
    db_schema: str = "ledger"
    fault_drop_credit_share: float = Field(
        0.0, ge=0.0, le=1.0, description="Development fault knob: share of orders whose credit step is dropped."
    )
    register_on_first_credit: bool = Field(
        True,
        description="Register a user the ledger has never seen on their first credit, in its currency; off, only"
        " users registered with PUT /v1/users/{user_id} are credited (others are refused, retryably).",
    )
    payments_consumers: int = Field(
        2,
        ge=1,
        le=16,
        description="Members of the payments consumer group in this process, each with its share of the partitions:"
        " one member's database round trips overlap another's Python work (as more instances would).",
    )
    retry_park_s: float = Field(
        300.0,
        gt=0.0,
        description="How long a RetryCredit for an order with no recorded payment waits (parked) for the order's"
        " PaymentSucceeded before it is dead-lettered as no_payment_fact.",
    )
