"""payments settings: env prefix PAYMENTS_ (plus the shared KAFKA_BOOTSTRAP, DATABASE_URL, ...)."""

import os
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from payments.domain import ReviewRule
from servicekit.settings import ServiceSettings

SECRET_PREFIX = "PAYMENTS_PSP_SECRET_"  # noqa: S105 - the variable name, not a secret


class Settings(ServiceSettings):
    """Provider secrets come from PAYMENTS_PSP_SECRET_<PROVIDER>; several secrets, comma-separated, are
    all accepted while a provider rotates its secret."""

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", frozen=True)

    http_port: int = 8101
    db_schema: str = "payments"
    psp_secrets: dict[str, list[str]] = {}
    sim_refund_failure_share: float = 0.0
    sim_refund_timeout_share: float = 0.0
    review_first_topup_above_minor: int | None = Field(
        None, gt=0, description="Hold a user's first top-up above this many minor units for risk review; unset: none."
    )
    review_expected_s: float = Field(900.0, gt=0, description="How long a risk review is expected to take.")
    metric_channels: frozenset[str] = Field(
        frozenset({"alipay", "wechat", "card", "carrier"}),
        description="Channels that get their own metric series (JSON list); any other is counted as `other`.",
    )

    def review_rule(self) -> ReviewRule | None:
        if self.review_first_topup_above_minor is None:
            return None
        return ReviewRule(self.review_first_topup_above_minor, self.review_expected_s)

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_environment(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("psp_secrets"):
            data["psp_secrets"] = {
                name[len(SECRET_PREFIX) :].lower(): [s.strip() for s in value.split(",") if s.strip()]
                for name, value in os.environ.items()
                if name.startswith(SECRET_PREFIX) and value.strip()
            }
        return data
