"""schemathesis against the notifier's OpenAPI spec: no 5xx and no response outside the spec."""

from fastapi import FastAPI

from notifier.bootstrap import build
from servicekit.identity import Scope
from tests.conftest import Broker
from tests.notifier.harness import notifier_settings
from tests.openapi_fuzz import fuzz, served

# The status page's event stream never ends by design; the page itself is tested in a browser.
ENDLESS = ("/v1/orders/{order_id}/events",)


def test_the_notifier_api_answers_every_request_within_its_spec(
    broker: Broker, database_url: str, isolation: str
) -> None:
    key: dict[str, str] = {}

    async def app() -> tuple[FastAPI, object]:
        notifier = await build(notifier_settings(broker, database_url, isolation))
        _, key["ApiKey"] = await notifier.infra.keys.create(f"fuzz-{isolation}", set(Scope))
        return notifier.app, notifier.close

    with served(app) as base_url:
        failures = fuzz(base_url, max_examples=25, skip_paths=ENDLESS, api_key=key["ApiKey"])
    assert failures == [], "\n\n".join(failures)
