"""reconciler settings: env prefix RECONCILER_ (plus the shared KAFKA_BOOTSTRAP, topic settings, ...)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RECONCILER_", extra="ignore", frozen=True)

    http_port: int = 8103
    threshold_s: float = Field(120.0, gt=0, description="Seconds after payment until an uncredited order is overdue.")
    session_timeout_s: float = Field(6.0, ge=2.0, le=60.0, description="Consumer group session timeout.")
    data_dir: Path = Field(Path(".credited/reconciler"), description="faust's working directory.")
