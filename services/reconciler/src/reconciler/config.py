"""reconciler settings: env prefix RECONCILER_ (plus the shared KAFKA_BOOTSTRAP, topic settings, ...)."""

from pathlib import Path
from typing import Annotated, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from contracts.base import WholeNumber, exponent
from reconciler.domain import WEEK_S, Policy
from servicekit.links import secrets_from
from servicekit.metric_channels import DEFAULT_METRIC_CHANNELS, METRIC_CHANNELS_ENV
from servicekit.secret_guard import PEER_DEV_SECRET
from servicekit.settings import ServiceSettings

CompensationAmount = Annotated[WholeNumber, Field(ge=0, le=10**12)]
"""A compensation in its currency's minor units: a whole number, 0 for none, at most what a payment can be."""


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RECONCILER_", extra="ignore", frozen=True)

    http_port: int = 8103
    threshold_s: float = Field(120.0, gt=0, description="Seconds after payment until an uncredited order is overdue.")
    channel_thresholds_s: dict[str, float] = Field(
        default_factory=dict, description='Per payment channel, as JSON: {"carrier": 300}.'
    )
    product_thresholds_s: dict[str, float] = Field(
        default_factory=dict,
        description='Per product, as JSON: {"game_points_6480": 600}. Product beats channel beats the default.',
    )
    retry_attempts: int = Field(3, ge=1, le=20, description="RetryCredit attempts before the credit is blocked.")
    retry_backoff_s: float = Field(2.0, gt=0, description="Wait after the first retry; doubles each attempt.")
    answer_wait_s: float = Field(
        300.0,
        gt=0,
        description="How long a BlockCredit or IssueRefund waits for its answer (the ledger's, the refund's outcome) "
        "before it is sent again under an event id of its own (the ledger and payments answer it even when they "
        "applied the first send); doubles each time. Longer than the ledger's park time.",
    )
    answer_resends: int = Field(
        8,
        ge=0,
        le=20,
        description="Re-sends of an unanswered BlockCredit or IssueRefund before the order goes to a person "
        '(needs_support, reconciler_escalations_total{reason="no_answer"}); 8 at the default wait: about 43 h, after '
        "payments' own 24-h warning of a refund still pending at its provider.",
    )
    compensation: dict[str, CompensationAmount] = Field(
        default_factory=dict,
        description="Delay compensation per late credit by ISO 4217 currency, each in that currency's minor units, as "
        'JSON: {"CNY": 500, "JPY": 50} is 5.00 CNY on a CNY order and 50 JPY on a JPY one; at most the order\'s '
        "amount. An order in a currency it does not list gets none (its timeline notes compensation_skipped, "
        'reconciler_remediations_total{action="GrantCompensation",outcome="skipped"} counts it). '
        "Not together with RECONCILER_COMPENSATION_MINOR.",
    )
    compensation_minor: int = Field(
        0,
        ge=0,
        description="The older setting, kept for deployments that set it (prefer RECONCILER_COMPENSATION): one delay "
        "compensation for every currency, in each one's minor units whatever they are (500 is 5.00 CNY on a CNY "
        "order, 500 JPY on a JPY one); at most the order's amount. Refused together with RECONCILER_COMPENSATION.",
    )
    retention_s: float = Field(
        WEEK_S, gt=0, description="How long a settled order stays in the table after it settled, in event time."
    )
    tick_s: float = Field(0.1, gt=0, le=5, description="How often timers and end offsets are checked.")
    round_linger_ms: float = Field(
        20.0,
        ge=0,
        le=1000,
        description="How long a round that has run out of records in hand waits once for more before it runs, "
        "while records flow (at least one per linger over the last half second; rounds.batches): fewer, fuller "
        "rounds, each costing produce requests and acknowledgements whatever its size, for at most this much more "
        "latency per event; a trickle never waits; 0 turns it off.",
    )
    metric_channels: frozenset[str] = Field(
        DEFAULT_METRIC_CHANNELS,
        validation_alias=AliasChoices(METRIC_CHANNELS_ENV),
        description="Channels that get their own metric series (JSON list); any other is counted as `other`. "
        "payments' PAYMENTS_METRIC_CHANNELS, read here too, so both services label a channel alike.",
    )
    session_timeout_s: float = Field(6.0, ge=2.0, le=60.0, description="Consumer group session timeout.")
    data_dir: Path = Field(Path(".credited/reconciler"), description="faust's working directory.")
    peer_secret: SecretStr | None = Field(
        None,
        description="HMAC secret the workers share to ask each other for an order's timeline without passing on the"
        " caller's API key (reconciler.adapters.peers); comma-separated during a rotation (signs with the first).",
    )

    @field_validator("compensation")
    @classmethod
    def _iso_4217_currencies(cls, compensation: dict[str, int]) -> dict[str, int]:
        for currency in compensation:
            exponent(currency)  # the error names the code: "'JPX' is not an ISO 4217 currency"
        return compensation

    @model_validator(mode="after")
    def _one_compensation_setting(self) -> Self:
        """One amount for every currency beside amounts per currency would leave the unlisted currencies' meaning to
        guess: the mapping alone says it (an unlisted currency gets nothing)."""
        if self.compensation and self.compensation_minor:
            raise ValueError(
                "RECONCILER_COMPENSATION_MINOR and RECONCILER_COMPENSATION are both set: unset"
                " RECONCILER_COMPENSATION_MINOR (one amount for every currency) and list each currency to compensate"
                " in RECONCILER_COMPENSATION"
            )
        return self

    def peer_secrets(self) -> list[str]:
        """RECONCILER_PEER_SECRET's secrets; unset in development mode, the local stack's published one (refused in
        production, where the worker does not start without its own)."""
        secrets = secrets_from(self.peer_secret)
        if not secrets and self.environment == "development":
            return [PEER_DEV_SECRET]
        return secrets

    def policy(self) -> Policy:
        return Policy(
            threshold_s=self.threshold_s,
            channel_thresholds_s=self.channel_thresholds_s,
            product_thresholds_s=self.product_thresholds_s,
            retry_attempts=self.retry_attempts,
            retry_backoff_s=self.retry_backoff_s,
            compensation=self.compensation,
            compensation_minor=self.compensation_minor,
            retention_s=self.retention_s,
            answer_wait_s=self.answer_wait_s,
            answer_resends=self.answer_resends,
        )
