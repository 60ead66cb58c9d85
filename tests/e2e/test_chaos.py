"""The fault-injecting checker's short schedule, as CI runs it: traffic through the four services on Apache Kafka
(its own broker, from scripts/apache-kafka, whatever CREDITED_TEST_BROKER says: the faults need a broker that
can be stopped and a log that survives it) and PostgreSQL, while the broker and PostgreSQL are restarted and each
service is SIGKILLed once; then every order is checked."""

import shutil
import tempfile
from pathlib import Path

import pytest

from harness.chaos.report import write_json
from harness.chaos.run import ChaosOptions, run_chaos
from harness.chaos.schedule import ci

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


async def test_no_paid_order_is_lost_doubled_or_refunded_through_broker_and_postgres_restarts_and_sigkills() -> None:
    schedule = ci()
    # Not under pytest's base temp: PostgreSQL runs as its own user (as root) and must reach its data directory
    # after a restart, and pytest makes its base temp 0700 again whenever another session starts.
    run_dir = Path(tempfile.mkdtemp(prefix="credited-chaos-"))
    kept = ROOT / "artifacts" / "chaos" / "ci-logs"
    try:
        result = await run_chaos(ChaosOptions(schedule, run_dir / "chaos", threshold_s=10.0, settle_s=240.0))
        write_json(result, ROOT / "artifacts" / "chaos" / "ci.json")
        if not result["ok"]:
            # A failed run keeps its services' logs, and the failure message ends with their last lines: the
            # next engineer starts from what each service said, not from a rerun that may pass.
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(run_dir / "chaos" / "logs", kept)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    assert result["faults_planned"] == {
        "broker_restart": 1,
        "postgres_restart": 1,
        "kill payments": 1,
        "kill ledger": 1,
        "kill reconciler": 1,
        "kill notifier": 1,
    }
    assert [f for f in result["faults"] if f["outcome"].startswith("not injected")] == []
    assert len(result["faults"]) == len(schedule.faults)
    assert result["orders"] == result["paid"] == schedule.orders, "the traffic got every order placed and paid"
    found = {name: f for name, f in result["findings"].items() if f["count"]}
    assert found == {}, f"see artifacts/chaos/ci.json and {kept}: {found}\n{last_lines(kept)}"
    assert result["credited"] == schedule.orders


def last_lines(logs: Path, count: int = 25) -> str:
    """The end of each service's log, as a failure message shows it."""
    return "\n".join(
        f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-count:])
        for log in sorted(logs.glob("*.log"))
    )
