"""schemathesis against payments' OpenAPI spec: no 5xx and no response outside the spec."""

from fastapi import FastAPI

from payments.bootstrap import build
from payments.config import Settings
from servicekit.identity import Scope
from tests.conftest import Broker
from tests.openapi_fuzz import fuzz, served
from tests.service_settings import settings_for


def test_the_payments_api_answers_every_request_within_its_spec(
    broker: Broker, database_url: str, isolation: str
) -> None:
    key: dict[str, str] = {}

    async def app() -> tuple[FastAPI, object]:
        settings = settings_for(
            Settings, broker, database_url, isolation, psp_secrets={"sim": ["sim-secret"]}, environment="development"
        )
        infra, app = await build(settings)
        _, key["ApiKey"] = await infra.keys.create(f"fuzz-{isolation}", set(Scope))
        return app, infra.close

    with served(app) as base_url:
        failures = fuzz(base_url, max_examples=25, api_key=key["ApiKey"])
    assert failures == [], "\n\n".join(failures)
