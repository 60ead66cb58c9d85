"""The report's table of what each rate step kept busy: the stack's cores and the load generator's, apart."""

from typing import Any

from harness.bench import cpu, report


def step(rate: float, measured_s: float, cpu_s: dict[str, float]) -> dict[str, Any]:
    return {
        "target_rate": rate,
        "orders_per_s": rate,
        "orders": round(rate * 10),
        "measured_s": measured_s,
        "processes": {name: {"cpu_s": s, "cores": 0.0, "peak_rss_mib": 1.0} for name, s in cpu_s.items()},
    }


def test_the_stack_and_the_generator_are_counted_apart_over_the_steps_measured_window() -> None:
    got = cpu.cores_busy(step(100, 20.0, {"payments": 10.0, "postgres": 14.0, "load generator (wrk)": 3.0}))
    assert got == {"stack_cores": 1.2, "generator_cores": 0.15}


def test_a_step_without_a_window_or_processes_has_no_figure_rather_than_a_made_up_one() -> None:
    assert cpu.cores_busy(step(100, 0.0, {"payments": 1.0})) == {"stack_cores": None, "generator_cores": None}
    assert cpu.cores_busy(step(100, 10.0, {})) == {"stack_cores": None, "generator_cores": None}


def test_the_report_gives_each_step_a_row_with_its_cores_and_its_cpu_per_order() -> None:
    steps = [
        step(100, 10.0, {"payments": 15.0, "load generator": 1.0}),
        step(400, 10.0, {"payments": 16.0, "load generator": 2.0}),
    ]
    lines = report._busy({"machine": {"nproc": 2}, "pipeline": {"steps": steps}})
    rows = [line for line in lines if line.startswith("| 100 ") or line.startswith("| 400 ")]
    assert rows == ["| 100 | 100 | 1.5 | 0.1 | 15 |", "| 400 | 400 | 1.6 | 0.2 | 4 |"]
    assert "2-core machine" in lines[0]
