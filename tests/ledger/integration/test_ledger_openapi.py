"""schemathesis against the ledger's OpenAPI spec: no 5xx and no response outside the spec."""

from fastapi import FastAPI

from ledger.bootstrap import build
from ledger.config import Settings
from servicekit.identity import Scope
from tests.conftest import Broker
from tests.openapi_fuzz import fuzz, served
from tests.service_settings import settings_for


def test_the_ledger_api_answers_every_request_within_its_spec(
    broker: Broker, database_url: str, isolation: str
) -> None:
    key: dict[str, str] = {}

    async def app() -> tuple[FastAPI, object]:
        infra, app = await build(settings_for(Settings, broker, database_url, isolation))
        _, key["ApiKey"] = await infra.keys.create(f"fuzz-{isolation}", set(Scope))
        return app, infra.close

    with served(app) as base_url:
        failures = fuzz(base_url, max_examples=25, api_key=key["ApiKey"])
    assert failures == [], "\n\n".join(failures)
