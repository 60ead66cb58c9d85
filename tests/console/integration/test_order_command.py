"""`credited order <id>` against the whole local stack: an engineer's key with support:read prints the order,
its timeline across the services and its actions, `--json` gives the support API's answer for scripts, and a
wrong key, a key without the scope or an unknown order each fail with a plain sentence."""

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import Broker
from tests.console.integration.support_stack import credit_in_timeline, credited, make_key, paid_order
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.e2e


async def test_credited_order_prints_a_credited_order_across_the_services_and_refuses_plainly(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    async with running_stack(broker, database_url, isolation, tmp_path) as (stack, _):
        engineer = make_key(stack, "engineer-bob", "support:read")
        without_scope = make_key(stack, "platform-backend", "orders:read")
        async with httpx.AsyncClient(timeout=30, headers=stack.headers) as platform:
            order_id = await paid_order(platform, stack, f"u-term-{isolation[-6:]}", 600)
        async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {engineer}"}) as support:
            await credit_in_timeline(support, stack, order_id)
        at = ["--payments-url", stack.url("payments")]

        shown = credited("order", order_id, *at, env={"CREDITED_API_KEY": engineer, "COLUMNS": "200"})
        assert shown.returncode == 0, shown.stderr
        assert order_id in shown.stdout and "timeline" in shown.stdout
        assert "order_placed" in shown.stdout and "payments" in shown.stdout
        assert "credit of" in shown.stdout and "ledger" in shown.stdout

        as_json = credited("order", order_id, *at, "--json", "--key", engineer)
        assert as_json.returncode == 0, as_json.stderr
        view = json.loads(as_json.stdout)
        assert view["order"]["order_id"] == order_id
        assert ("ledger", "credit") in {(entry["source"], entry["kind"]) for entry in view["timeline"]}

        refused = credited("order", order_id, *at, "--key", without_scope)
        assert refused.returncode == 1 and "403 insufficient_scope" in refused.stderr
        assert "support:read" in refused.stderr
        wrong = credited("order", order_id, *at, "--key", "ck_live_not-a-key")
        assert wrong.returncode == 1 and "401" in wrong.stderr and "CREDITED_API_KEY" in wrong.stderr
        unknown = credited("order", "ord_does_not_exist", *at, "--key", engineer)
        assert unknown.returncode == 1 and "404" in unknown.stderr
        for run in (shown, as_json, refused, wrong, unknown):
            assert "Traceback" not in run.stderr + run.stdout
