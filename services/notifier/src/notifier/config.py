"""notifier settings: env prefix NOTIFIER_ (plus the shared KAFKA_BOOTSTRAP, DATABASE_URL, ...)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", frozen=True)

    http_port: int = 8104
    db_schema: str = "notifier"
    webhook_url: str | None = Field(None, description="Platform backend endpoint for signed notifications.")
    webhook_secret: str = Field("", description="HMAC-SHA256 secret for the webhook's X-Signature.")
    webhook_timeout_s: float = 5.0
    max_attempts: int = Field(8, ge=1, le=50)
