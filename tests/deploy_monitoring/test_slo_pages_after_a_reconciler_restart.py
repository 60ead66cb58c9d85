"""The low-traffic credit SLO page, on the series a restarted reconciler really emits: its table restored
from the changelog, its timers flag orders paid before the restart."""

import asyncio
import subprocess
import time
from pathlib import Path

import yaml

from tests.reconciler.unit.worker import Worker, paid

ROOT = Path(__file__).resolve().parents[2]


def _series(worker: Worker) -> list[dict[str, str]]:
    """Every reconciler_* counter sample the worker's registry holds, held for an hour at one value a minute."""
    found = []
    for metric in worker.observe.flagged_orders.collect() + worker.observe.paid_orders.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                found.append({"series": f"{sample.name}{{{labels}}}", "values": f"{sample.value:g}x60"})
    return found


async def test_orders_that_go_overdue_after_a_reconciler_restart_page_on_low_traffic(tmp_path: Path) -> None:
    """credited:orders_paid:increase1h is sum(increase(reconciler_orders_paid_total[1h])): after a reconciler
    restart no paid-orders series exists until a new payment is applied (the counter is labelled by channel and
    born at its first increment), so the recording rule is empty, `and on () ... < 100` is empty, and the
    low-traffic CreditSLOBurnRate cannot fire. Orders paid before the restart that go overdue after it (the
    restart being often part of the incident) are flagged and counted, and the SLO page that promises to catch
    "3 overdue in an hour of low traffic" stays silent."""
    before = Worker()
    # published as they were paid: the credit is what goes missing (a payment published late would not count here)
    paid_at = time.time() - 30
    await before.batch(*(before.record(paid(f"o{i}", seconds_ago=30), timestamp=paid_at) for i in range(3)))
    after = before.restarted()  # a new worker process: the table restored, a fresh registry
    await after.tick()
    assert after.observe.flagged_orders.labels("card", "credit_missing")._value.get() == 3

    series = _series(after)
    assert not any(s["series"].startswith("reconciler_orders_paid_total") for s in series), series
    tests = {
        "rule_files": [str(ROOT / "deploy/prometheus/rules/slo.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "three orders flagged after a restart, nothing paid since",
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "30m",
                        "alertname": "CreditSLOBurnRate",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "page",
                                    "slo_window": "low_traffic",
                                    "service": "reconciler",
                                },
                                "exp_annotations": {
                                    "description": "Fewer than 100 orders were paid in the last hour, too few for a"
                                    " ratio, and 3 of them were not credited within their threshold: far above 0.1%.",
                                    "runbook_url": "/d/runbook-credit-slo-burn-rate",
                                    "summary": "3 orders went overdue in the last hour on low traffic",
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "slo_after_restart.test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    command = ["promtool", "test", "rules", str(path)]
    run = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
