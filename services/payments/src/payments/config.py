"""payments settings: env prefix PAYMENTS_ (plus the shared KAFKA_BOOTSTRAP, DATABASE_URL, ...)."""

import os
from collections.abc import Collection
from typing import Any

from pydantic import AliasChoices, Field, PositiveInt, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from contracts.base import exponent
from payments.domain import Payers, ReviewRule, Settlements
from payments.schedule import QueryPolicy
from servicekit.links import DEFAULT_TTL_S
from servicekit.metric_channels import DEFAULT_METRIC_CHANNELS
from servicekit.settings import ServiceSettings

SECRET_PREFIX = "PAYMENTS_PSP_SECRET_"  # noqa: S105 - the variable name, not a secret
PROVIDER_FIELDS = (
    "wechatpay_mchid",
    "wechatpay_appid",
    "wechatpay_merchant_serial",
    "wechatpay_merchant_private_key",
    "wechatpay_apiv3_key",
    "wechatpay_platform_certificates",
    "wechatpay_public_key_id",
    "wechatpay_public_key",
    "wechatpay_refund_notify_url",
    "alipay_app_id",
    "alipay_app_private_key",
    "alipay_public_key",
    "alipay_seller_id",
)
"""The real providers' settings docker-compose passes through, as "" when unset: "" means unset."""


class Settings(ServiceSettings):
    """Simulated providers' secrets come from PAYMENTS_PSP_SECRET_<NAME>; several secrets, comma-separated, are
    all accepted while one is rotated. A simulated provider runs only in development (CREDITED_ENV=development):
    whoever holds its secret can mark any order paid, and its refunds reach nobody.

    WeChat Pay and Alipay are configured by their own PAYMENTS_WECHATPAY_* and PAYMENTS_ALIPAY_* fields;
    each is off until its merchant id (app id) is set, and then every key it needs must be set too. No
    key or secret has a default: the local stack passes the local provider server's test keys."""

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", frozen=True)

    http_port: int = 8101
    db_schema: str = "payments"
    psp_secrets: dict[str, list[str]] = {}
    sim_refund_failure_share: float = 0.0
    sim_refund_timeout_share: float = 0.0
    review_first_topup_above_minor: int | None = Field(
        None,
        gt=0,
        description="Hold a user's first top-up above this many minor units of its currency for risk review, in "
        "every currency review_first_topup_above does not name; unset: only those are reviewed.",
    )
    review_first_topup_above: dict[str, PositiveInt] = Field(
        {},
        description="Per currency, hold a user's first top-up above this many of the currency's minor units (JSON "
        'object by ISO 4217 code, e.g. {"CNY": 50000, "JPY": 10000}: 500.00 CNY, 10,000 JPY); it overrides '
        "review_first_topup_above_minor for the currencies it names.",
    )
    review_expected_s: float = Field(900.0, gt=0, description="How long a risk review is expected to take.")
    processes: int = Field(
        1, ge=1, le=64, description="HTTP processes on the one port (SO_REUSEPORT), each a whole payments instance."
    )
    group_window_ms: float = Field(
        1.0, ge=0, le=50, description="How long a request waits for others to share its transaction (0: none)."
    )
    group_max: int = Field(200, ge=1, le=5000, description="Requests in one group transaction at most.")
    fast_path: bool = Field(
        True, description="Answer plain orders and callbacks ahead of FastAPI (off: FastAPI answers all, same answers)."
    )
    status_base_url: str | None = Field(
        None,
        description="The notifier's public base URL: each order answers a signed link to its status page there "
        "(`status_url`); unset, `status_url` is null.",
    )
    status_link_ttl_s: int = Field(
        DEFAULT_TTL_S,
        ge=1,
        le=365 * 24 * 3600,
        validation_alias=AliasChoices("PAYMENTS_STATUS_LINK_TTL_S", "CREDITED_STATUS_LINK_TTL_S"),
        description="How long an order's status link opens its page (PAYMENTS_STATUS_LINK_TTL_S, else the shared "
        "CREDITED_STATUS_LINK_TTL_S, which the notifier's push links follow too).",
    )
    metric_channels: frozenset[str] = Field(
        DEFAULT_METRIC_CHANNELS,
        description="Channels that get their own metric series (JSON list); any other is counted as `other`.",
    )

    wechatpay_mchid: str | None = Field(None, description="WeChat Pay merchant id (商户号); unset: no WeChat Pay.")
    wechatpay_appid: str | None = Field(None, description="The app id (AppID) the merchant's payments are made in.")
    wechatpay_merchant_serial: str | None = Field(None, description="Serial number of the merchant API certificate.")
    wechatpay_merchant_private_key: SecretStr | None = Field(
        None, description="The merchant API private key (apiclient_key.pem), PEM text; signs every request."
    )
    wechatpay_apiv3_key: SecretStr | None = Field(None, description="The 32-character APIv3 key; opens callbacks.")
    wechatpay_platform_certificates: str | None = Field(
        None, description="WeChat Pay platform certificates, PEM text (several during a rotation)."
    )
    wechatpay_public_key_id: str | None = Field(None, description="WeChat Pay public key id (PUB_KEY_ID_...), if used.")
    wechatpay_public_key: str | None = Field(None, description="WeChat Pay public key, PEM, instead of certificates.")
    wechatpay_api_base: str = Field("https://api.mch.weixin.qq.com", description="WeChat Pay API base URL.")
    wechatpay_refund_notify_url: str | None = Field(None, description="Where WeChat Pay reports refund outcomes.")
    alipay_app_id: str | None = Field(None, description="Alipay app id (APPID); unset: no Alipay.")
    alipay_app_private_key: SecretStr | None = Field(
        None, description="The app's RSA2 private key (PEM or the bare base64 Alipay's key tool prints)."
    )
    alipay_public_key: str | None = Field(None, description="Alipay's public key for this app (PEM or bare base64).")
    alipay_gateway: str = Field("https://openapi.alipay.com/gateway.do", description="Alipay's gateway URL.")
    alipay_seller_id: str | None = Field(None, description="If set, notifications must name this seller (2088...).")
    provider_timestamp_tolerance_s: int = Field(
        300, ge=30, le=3600, description="How far a callback's signed time may be from ours (WeChat Pay, Alipay)."
    )
    max_clock_skew_s: float = Field(
        300.0, gt=0, description="A provider's paid_at further ahead than this of its arrival is clamped to it."
    )
    provider_timeout_s: float = Field(10.0, gt=0, le=120, description="How long a request to a provider may take.")
    channel_providers: dict[str, str] = Field(
        {"alipay": "alipay", "wechat": "wechatpay"},
        description="The provider that takes each channel's payments (JSON object): payments asks it about an "
        "order whose callback has not come. A channel whose provider is not configured is never asked about.",
    )
    provider_currencies: dict[str, frozenset[str]] = Field(
        {"alipay": frozenset({"CNY"}), "wechatpay": frozenset({"CNY"})},
        description="The currencies each provider settles in (JSON object of lists): an order of a channel whose "
        "provider does not take its currency is refused (422 currency_not_supported). WeChat Pay and Alipay as "
        "direct merchants settle in CNY.",
    )
    query_delay_s: float = Field(30.0, gt=0, description="How long after an order payments first asks its provider.")
    query_backoff: float = Field(2.0, ge=1, le=10, description="Each later query waits this many times longer.")
    query_max_interval_s: float = Field(300.0, gt=0, description="The longest wait between two queries of an order.")
    payment_expiry_s: float = Field(
        1800.0, gt=0, description="How long an order may stay unpaid; then it is closed at the provider, expired."
    )
    query_unknown_order_for_s: float = Field(
        7200.0,
        ge=0,
        description="How long after its expiry payments keeps asking about an order its provider said it never had: "
        "the platform creates the provider's trade, and a user can start paying one after the expiry (WeChat Pay's "
        "prepay lives 2 hours); such a payment is found and credited, not lost.",
    )
    payment_expiry_by_channel: dict[str, float] = Field(
        {}, description="payment_expiry_s for some channels (JSON object of seconds by channel)."
    )
    query_batch: int = Field(
        50,
        ge=1,
        le=1000,
        description="Due queries one worker takes in a round (64 in flight at most: a provider's connections).",
    )
    query_idle_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="The longest the query worker sleeps when none is due (it wakes sooner when the next falls due).",
    )
    audit_ledger_url: str | None = Field(
        None,
        description="The ledger's base URL: the money audit reads credits there (unset, or no API key: no audit "
        "runs and POST /v1/audits answers 409), and the support API an order's entries (with the caller's key).",
    )
    audit_ledger_api_key: SecretStr | None = Field(
        None, description="An API key with audit:read the money audit reads the ledger's credits with."
    )
    audit_interval_s: float = Field(300.0, gt=0, description="How often the money audit runs (one process at a time).")
    audit_window_s: float = Field(86400.0, gt=0, le=31 * 86400, description="How far back a scheduled audit looks.")
    audit_grace_s: float = Field(
        180.0,
        ge=0,
        description="An order whose payment payments recorded this recently (its callback's or query answer's "
        "arrival, its review's release) and not credited yet is in flight, not missing: past the reconciler's "
        "threshold, so the audit re-drives only what the stream itself did not fix.",
    )

    case_repage_after_s: float = Field(
        1800.0,
        gt=0,
        description="A support case nobody acknowledged this long is re-paged one severity higher (warning -> page"
        " -> critical), once per step.",
    )
    case_watch_interval_s: float = Field(
        5.0, gt=0, le=60, description="How often re-pages are due and the open-case gauges are refreshed."
    )

    reconciler_url: str | None = Field(
        None, description="The reconciler's base URL the support API reads an order's timeline from (unset: none)."
    )
    notifier_url: str | None = Field(
        None,
        description="The notifier's base URL (inside the network) the support API reads an order's notifications "
        "from and asks to resend one (unset: none).",
    )
    support_timeout_s: float = Field(
        2.0, gt=0, le=30, description="How long the support API waits for another service before naming it unavailable."
    )

    refused_callbacks_keep_s: float = Field(
        30 * 86400,
        ge=86400,
        description="How long a callback refused before any order was read from it (outcome `rejected`: a signature "
        "that failed, a body that is no callback) is kept for audit; then it is deleted (servicekit.retention). "
        "Accepted callbacks, and refused ones a provider signed about an order, are never deleted.",
    )
    idempotency_keys_keep_s: float = Field(
        7 * 86400,
        ge=86400,
        description="How long an order's Idempotency-Key answers its first order; then it is deleted, and a request "
        "with it is a new one. Longer than an order stays payable (the longest expiry and "
        "PAYMENTS_QUERY_UNKNOWN_ORDER_FOR_S after it), so no retry places a second order while the first can be paid.",
    )

    @field_validator(
        "audit_ledger_url",
        "audit_ledger_api_key",
        "reconciler_url",
        "notifier_url",
        *PROVIDER_FIELDS,
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value  # compose passes an unset variable as ""

    @model_validator(mode="after")
    def _audit_complete(self) -> "Settings":
        if self.audit_ledger_api_key is not None and self.audit_ledger_url is None:
            raise ValueError("PAYMENTS_AUDIT_LEDGER_API_KEY is set without PAYMENTS_AUDIT_LEDGER_URL")
        return self

    @model_validator(mode="after")
    def _keys_outlive_payable_orders(self) -> "Settings":
        if self.idempotency_keys_keep_s <= self.payable_for_s:
            raise ValueError(
                f"PAYMENTS_IDEMPOTENCY_KEYS_KEEP_S ({self.idempotency_keys_keep_s:.0f}) must be longer than an order "
                f"stays payable ({self.payable_for_s:.0f} s: its longest payment expiry and "
                "PAYMENTS_QUERY_UNKNOWN_ORDER_FOR_S after it)"
            )
        return self

    @property
    def payable_for_s(self) -> float:
        """How long after it is placed an order can still be paid: the longest expiry of any channel, then the
        unknown-order window, in which a trade created and paid after the expiry is still found and credited."""
        return max([self.payment_expiry_s, *self.payment_expiry_by_channel.values()]) + self.query_unknown_order_for_s

    @model_validator(mode="after")
    def _providers_complete(self) -> "Settings":
        wechat = {
            "PAYMENTS_WECHATPAY_APPID": self.wechatpay_appid,
            "PAYMENTS_WECHATPAY_MERCHANT_SERIAL": self.wechatpay_merchant_serial,
            "PAYMENTS_WECHATPAY_MERCHANT_PRIVATE_KEY": self.wechatpay_merchant_private_key,
            "PAYMENTS_WECHATPAY_APIV3_KEY": self.wechatpay_apiv3_key,
            "PAYMENTS_WECHATPAY_PLATFORM_CERTIFICATES or _PUBLIC_KEY": self.wechatpay_platform_certificates
            or self.wechatpay_public_key,
        }
        alipay = {
            "PAYMENTS_ALIPAY_APP_PRIVATE_KEY": self.alipay_app_private_key,
            "PAYMENTS_ALIPAY_PUBLIC_KEY": self.alipay_public_key,
        }
        for provider, enabled, needed in (
            ("WeChat Pay", self.wechatpay_mchid, wechat),
            ("Alipay", self.alipay_app_id, alipay),
        ):
            missing = [name for name, value in needed.items() if not value]
            if enabled and missing:
                raise ValueError(f"{provider} is configured without {', '.join(missing)}")
        if (self.wechatpay_public_key is None) != (self.wechatpay_public_key_id is None):
            raise ValueError("PAYMENTS_WECHATPAY_PUBLIC_KEY and PAYMENTS_WECHATPAY_PUBLIC_KEY_ID go together")
        return self

    def query_policy(self, providers: Collection[str]) -> QueryPolicy:
        """When to ask which provider about an order without outcome; only `providers` (the configured ones)."""
        return QueryPolicy(
            providers={c: p for c, p in self.channel_providers.items() if p in providers},
            delay_s=self.query_delay_s,
            expiry_s=self.payment_expiry_s,
            expiry_by_channel=self.payment_expiry_by_channel,
            backoff=self.query_backoff,
            max_interval_s=max(self.query_max_interval_s, self.query_delay_s),
            unknown_order_for_s=self.query_unknown_order_for_s,
        )

    @property
    def simulated_providers(self) -> dict[str, list[str]]:
        """The simulated providers' HMAC secrets by name: in development only; production runs none, whatever
        PAYMENTS_PSP_SECRET_<NAME> says (and payments.main refuses to start on one)."""
        return dict(self.psp_secrets) if self.environment == "development" else {}

    @property
    def real_providers(self) -> list[str]:
        """The real providers configured: "WeChat Pay" and "Alipay" when their merchant (app) id is set."""
        named = (("WeChat Pay", self.wechatpay_mchid), ("Alipay", self.alipay_app_id))
        return [name for name, enabled in named if enabled]

    def payers(self) -> Payers:
        """Which provider may pay an order of each channel (channel_providers); in development the simulated
        providers pay every channel too."""
        return Payers(self.channel_providers, frozenset(self.simulated_providers))

    def settlements(self) -> Settlements:
        """Which currencies an order of each channel may be placed in (provider_currencies)."""
        return Settlements(self.channel_providers, self.provider_currencies)

    def review_rule(self) -> ReviewRule | None:
        """Which first top-ups are held for review: above their currency's own threshold, else above the single
        number for every currency; None when neither is set."""
        if self.review_first_topup_above_minor is None and not self.review_first_topup_above:
            return None
        return ReviewRule(self.review_expected_s, self.review_first_topup_above, self.review_first_topup_above_minor)

    @field_validator("review_first_topup_above")
    @classmethod
    def _iso_4217_codes(cls, thresholds: dict[str, int]) -> dict[str, int]:
        # A code no order can be in would hold nothing, and a platform would believe that currency reviewed.
        for code in thresholds:
            try:
                exponent(code)
            except ValueError as exc:
                raise ValueError(f"{exc}; name each currency by its upper-case ISO 4217 code, e.g. CNY") from None
        return thresholds

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
