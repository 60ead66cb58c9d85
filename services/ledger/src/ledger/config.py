"""ledger settings: env prefix LEDGER_ (plus the shared KAFKA_BOOTSTRAP, DATABASE_URL, ...)."""

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore", frozen=True)

    http_port: int = 8102
    db_schema: str = "ledger"
    fault_drop_credit_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Development fault knob: share of orders whose credit step is dropped (CREDITED_ENV=development"
        " only: elsewhere the ledger refuses to start with it set).",
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

    @model_validator(mode="after")
    def _faults_only_in_development(self) -> Self:
        """Dropping paid credits on purpose is the demo's and the tests' fault: a production ledger with the knob
        set (a copied .env, a stale compose file) would leave real users unpaid, so it does not start."""
        if self.fault_drop_credit_share > 0 and self.environment != "development":
            raise ValueError(
                "LEDGER_FAULT_DROP_CREDIT_SHARE drops paid credits on purpose and is allowed only with"
                " CREDITED_ENV=development: unset it (or set it to 0)"
            )
        return self
