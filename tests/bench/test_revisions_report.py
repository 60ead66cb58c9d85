"""`credited bench-revisions`' arithmetic and report, from step figures shaped like run_step's."""

from typing import Any

import orjson
import pytest

from harness.bench.revisions import Variant, medians, render, summary


def step(rate: float, p99: float, cpu: dict[str, float], *, twice: int = 0, errors: int = 0) -> dict[str, Any]:
    return {
        "target_rate": rate,
        "step_s": 10.0,
        "orders_per_s": rate * 0.98,
        "pay_to_credit_p50_s": p99 / 3,
        "pay_to_credit_p99_s": p99,
        "status_to_push_p99_ms": 200.0,
        "detection_latency_p99_s": 0.3,
        "detection_precision": 1.0,
        "detection_recall": 1.0,
        "credited_twice": twice,
        "unsettled": 0,
        "errors": errors,
        "processes": {name: {"cpu_s": s, "cores": 0.0, "peak_rss_mib": 1.0} for name, s in cpu.items()},
        "postgres_statements": {"statements_per_order": 20.0, "commits_per_order": 10.0},
    }


def compared(runs: dict[str, Any], commits: dict[str, str], rate: float, **extra: Any) -> dict[str, Any]:
    """What `compare` returns for one round of one rate step, from these runs."""
    return {
        "written": "2026-12-03 23:50 UTC",
        "revisions": list(runs),
        "commits": commits,
        "rates": [rate],
        "step_s": 10.0,
        "rounds": 1,
        "runs": runs,
        "medians": medians(runs),
        **extra,
    }


def test_a_steps_cpu_per_order_leaves_the_load_generators_out_of_the_stacks_total() -> None:
    got = summary(step(100, 0.5, {"ledger": 2.0, "postgres": 3.0, "load generator": 1.0, "load generator (wrk)": 4.0}))
    assert got["cpu_ms_per_order"] == {
        "ledger": 2.0,
        "postgres": 3.0,
        "load generator": 1.0,
        "load generator (wrk)": 4.0,
    }
    assert got["stack_cpu_ms_per_order"] == 5.0  # 1,000 orders placed; 5 CPU-s of the stack's processes
    assert got["kept_exact"] is True


def test_medians_are_taken_per_revision_and_rate_and_an_inexact_round_shows() -> None:
    runs = {
        "base": [[summary(step(100, p, {"ledger": c}))] for p, c in ((0.4, 2.0), (0.9, 3.0), (0.5, 2.5))],
        "new": [[summary(step(100, 0.3, {"ledger": 1.0}, twice=1 if i == 0 else 0))] for i in range(3)],
    }
    table = medians(runs)
    assert table["base"]["100"]["pay_to_credit_p99_s"] == 0.5
    assert table["base"]["100"]["cpu_ms_per_order"] == {"ledger": 2.5}
    assert table["base"]["100"]["rounds"] == 3 and table["base"]["100"]["kept_exact"] is True
    assert table["new"]["100"]["kept_exact"] is False
    orjson.dumps(table)  # the JSON beside the report holds it as it is


def test_the_report_gives_each_revision_a_row_with_its_ratio_to_the_first() -> None:
    runs = {
        "main~2": [[summary(step(140, 0.8, {"ledger": 2.0}))]],
        "main": [[summary(step(140, 0.4, {"ledger": 1.5}))]],
    }
    lost = [{"round": 2, "revision": "main", "error": "ConnectError()", "logs": "/tmp/r"}]
    text = render(compared(runs, {"main~2": "aaaaaaa", "main": "bbbbbbb"}, 140.0, failed_rounds=lost))
    assert "Round 2 of main failed and is not counted: ConnectError()." in text
    assert "not exact" not in text
    assert "## 140 orders/s asked" in text
    new_row = next(line for line in text.splitlines() if line.startswith("| main |"))
    assert "0.4 (0.50x)" in new_row  # pay-to-credit p99 halved
    cpu_row = [line for line in text.splitlines() if line.startswith("| main |")][1]
    assert cpu_row == "| main | 1.07 |"  # 1.5 CPU-s over the 1,400 orders of a 10 s step at 140/s
    assert "main~2 (aaaaaaa)" in text


def test_the_report_says_how_a_round_was_not_exact() -> None:
    runs = {"base": [[summary(step(200, 14.7, {"ledger": 1.0}))]], "new": [[summary(step(200, 1.1, {}, twice=2))]]}
    text = render(compared(runs, {"base": "a", "new": "b"}, 200))
    assert (
        "Round 1 of new at 200/s was not exact: credited_twice 2, unsettled 0, errors 0, detection_precision 1,"
        " detection_recall 1." in text
    )
    assert "Round 1 of base" not in text


def test_a_revision_without_a_colon_runs_in_the_stacks_usual_shape() -> None:
    assert Variant.parse("main") == Variant("main", {}, {})


def test_a_revision_can_name_process_counts_and_environment_variables_for_its_stack() -> None:
    variant = Variant.parse("HEAD~1:reconciler_workers=1,KAFKA_LINGER_MS=2,payments_processes=3")
    assert variant == Variant("HEAD~1", {"reconciler_workers": 1, "payments_processes": 3}, {"KAFKA_LINGER_MS": "2"})


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("main:threshold_s=3", "neither one of payments_processes, reconciler_workers, ledger_payments_consumers"),
        ("main:reconciler_workers=0", "whole number from 1"),
        ("main:reconciler_workers=two", "whole number from 1"),
        ("main:KAFKA_LINGER_MS", "not name=value"),
        (":KAFKA_LINGER_MS=2", "names no revision"),
    ],
)
def test_a_shape_the_stack_cannot_take_is_refused_by_name(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        Variant.parse(text)


def test_a_round_whose_load_generator_lost_a_request_is_not_exact_and_says_so() -> None:
    lost = step(25, 0.1, {"ledger": 1.0}, errors=1) | {"socket_errors": 1, "generator_lost_requests": 1}
    runs = {"base": [[summary(step(25, 0.1, {"ledger": 1.0}))]], "new": [[summary(lost)]]}
    assert runs["new"][0][0]["generator_lost_requests"] == 1
    text = render(compared(runs, {"base": "aaaaaaa", "new": "bbbbbbb"}, 25.0))
    assert "Round 1 of new at 25/s was not exact: credited_twice 0, unsettled 0, errors 1," in text
    assert "Round 1 of base" not in text
