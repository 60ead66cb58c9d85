"""notifier settings: env prefix NOTIFIER_ (plus the shared KAFKA_BOOTSTRAP, DATABASE_URL, ...)."""

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from servicekit.links import DEFAULT_TTL_S
from servicekit.netguard import AddressPolicy
from servicekit.settings import ServiceSettings

PUSH_SERVICES = (
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.push.apple.com",
    "*.notify.windows.com",
)
"""The Web Push services of Chrome, Firefox, Safari and Edge: the only hosts a subscription may point at."""


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", frozen=True)

    http_port: int = 8104
    db_schema: str = "notifier"
    public_url: str | None = Field(None, description="Where users reach this service; push messages link the page.")
    status_link_ttl_s: int = Field(
        DEFAULT_TTL_S,
        ge=1,
        le=365 * 24 * 3600,
        validation_alias=AliasChoices("NOTIFIER_STATUS_LINK_TTL_S", "CREDITED_STATUS_LINK_TTL_S"),
        description="How long the status link in a push message opens its page (NOTIFIER_STATUS_LINK_TTL_S, else "
        "the shared CREDITED_STATUS_LINK_TTL_S, which payments' status links follow too).",
    )

    webhook_url: str | None = Field(None, description="Platform backend endpoint for signed notifications.")
    webhook_secret: str = Field("", description="HMAC-SHA256 secret for the webhook's X-Signature.")
    webhook_timeout_s: float = Field(5.0, gt=0, description="How long a webhook delivery may take (0 would be none).")

    vapid_private_key: SecretStr | None = Field(
        None, description="VAPID key (PEM, or base64url raw P-256); unset, one is made per run and said so."
    )
    vapid_subject: str = Field(
        "mailto:notifier@credited.invalid", description="VAPID `sub`: a contact for push services."
    )
    webpush_ttl_s: int = Field(86400, ge=0, le=28 * 86400)
    webpush_allowed_hosts: tuple[str, ...] = PUSH_SERVICES
    webpush_allow_http: bool = Field(
        False, description="Accept plain http push endpoints (loopback tests only; and only in development mode)."
    )
    push_timeout_s: float = Field(5.0, gt=0)
    max_subscriptions_per_user: int = Field(
        20,
        ge=1,
        le=1000,
        description="Devices the platform may register for one user, and apart from them devices all the user's "
        "status links together may register; past either, registration answers 409. Devices registered through "
        "status links never take the platform's slots.",
    )
    max_link_subscriptions_per_order: int = Field(
        5,
        ge=1,
        le=100,
        description="Devices one order's status link may register (a link is shared further than its user, and push "
        "endpoints are not verified); past it, registration through the link answers 409.",
    )
    allowed_networks: tuple[str, ...] = Field(
        (),
        description="Networks (CIDR) push services and the webhook may be reached on although private or loopback "
        "(a receiver on the operator's own network). Cloud metadata and link-local addresses stay refused.",
    )

    fcm_service_account_file: Path | None = Field(
        None, description="Google service-account JSON key: FCM access tokens are minted from it and refreshed."
    )
    fcm_endpoint: str | None = Field(
        None, description="FCM HTTP v1 messages:send URL; unset, the service account's project's (or no FCM)."
    )
    fcm_bearer_token: SecretStr = Field(
        SecretStr(""), description="A fixed bearer instead of a service account (a proxy, tests): never refreshed."
    )

    max_attempts: int | None = Field(
        None, ge=1, description="A cap on the attempts of one delivery; unset: retried for retry_for_s."
    )
    retry_for_s: float = Field(
        3 * 24 * 3600.0,
        gt=0,
        description="How long a delivery is retried after it was queued (with its notification, or its resend).",
    )
    base_backoff_s: float = Field(0.5, gt=0)
    max_backoff_s: float = Field(3600.0, gt=0, description="The longest wait between two attempts.")
    max_in_flight: int = Field(
        256,
        ge=1,
        le=10_000,
        description="Web Push and FCM deliveries in flight at once, and the connections they share (the webhook has "
        "its own, NOTIFIER_WEBHOOK_CONNECTIONS).",
    )
    webhook_connections: int = Field(
        50,
        ge=1,
        le=10_000,
        description="Connections to the platform's webhook, and so its deliveries in flight at once: with a 100 ms "
        "webhook, 500 a second per instance (docs/capacity.md, step 5).",
    )
    sse_heartbeat_s: float = Field(15.0, gt=0)
    max_streams_per_order: int = Field(
        5,
        ge=1,
        le=1000,
        description="Live event streams open at once for one order. Past it, a new stream takes the place of the "
        "oldest one the same link or key opened (a phone that vanished leaves its stream open until the kernel "
        "gives up); 429 while other viewers hold them all.",
    )
    max_streams: int = Field(
        2000, ge=1, le=100_000, description="Live event streams open at once in this process; past it, 429."
    )

    notifications_keep_s: float = Field(
        90 * 86400.0,
        gt=0,
        description="How long the notifier keeps what it sent (servicekit.retention): a resend is deleted once it "
        "was asked longer ago than this, a notification once it was made longer ago, each with its deliveries; never "
        "one with a delivery still pending, nor a notification a resend is kept for. Longer than "
        "NOTIFIER_RETRY_FOR_S and the status links' lifetime, which it must stay: what is deleted is no longer "
        "retried, and no valid link opens a page that lost its order's notifications. The inbox, the status page "
        "and the support timeline show no more of what was deleted.",
    )

    @model_validator(mode="after")
    def _notifications_outlive_their_use(self) -> "Settings":
        if self.notifications_keep_s <= max(self.retry_for_s, self.status_link_ttl_s):
            raise ValueError(
                f"NOTIFIER_NOTIFICATIONS_KEEP_S ({self.notifications_keep_s:.0f}) must be longer than a delivery is "
                f"retried (NOTIFIER_RETRY_FOR_S, {self.retry_for_s:.0f} s) and a status link opens its page "
                f"(NOTIFIER_STATUS_LINK_TTL_S or CREDITED_STATUS_LINK_TTL_S, {self.status_link_ttl_s} s)"
            )
        return self

    @property
    def address_policy(self) -> AddressPolicy:
        """Where the notifier may connect (servicekit.netguard): public https receivers, plus the allowed
        networks; loopback, private networks and plain http too in development mode (CREDITED_ENV)."""
        return AddressPolicy.for_environment(self.environment, self.allowed_networks)

    @property
    def lease_s(self) -> float:
        """How long a claimed delivery stays with its worker: past any channel's timeout, with room to settle."""
        return 2 * max(self.webhook_timeout_s, self.push_timeout_s) + 5.0
