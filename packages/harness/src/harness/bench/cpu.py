"""CPU per order: for each process of the stack, for the load generator apart, and against the report this
run replaces (read before it is overwritten), so the report shows before and after side by side."""

from typing import Any

GENERATORS = ("load generator", "load generator (wrk)")
"""The load generator's processes: Python (webhook receiver, orchestration) and wrk (orders and callbacks)."""


def per_order(step: dict[str, Any]) -> dict[str, float]:
    """CPU milliseconds per order of each process at `step` (over its measured window)."""
    orders = max(1, step["orders"])
    return {name: round(usage["cpu_s"] / orders * 1000, 3) for name, usage in step.get("processes", {}).items()}


def cores_busy(step: dict[str, Any]) -> dict[str, float | None]:
    """The cores the stack's processes and the load generator's kept busy on average over the step's measured
    window (first order to last settlement): CPU seconds over that window."""
    window = step.get("measured_s") or 0.0
    processes = step.get("processes", {})
    if window <= 0 or not processes:
        return {"stack_cores": None, "generator_cores": None}
    stack, generator = _apart({name: u["cpu_s"] for name, u in processes.items()})
    return {"stack_cores": round(stack / window, 2), "generator_cores": round(generator / window, 2)}


def _apart(by_process: dict[str, float]) -> tuple[float, float]:
    """A per-process figure summed over the stack's processes and over the load generator's: (stack, generator)."""
    stack = sum(value for name, value in by_process.items() if name not in GENERATORS)
    return stack, sum(value for name, value in by_process.items() if name in GENERATORS)


def capacity(step: dict[str, Any], cores: int) -> dict[str, float | None]:
    """CPU ms per order of the stack and of the generator, and the orders/s `cores` would carry at that CPU
    per order: counting only the stack's CPU (the generator elsewhere), and counting the generator's too."""
    stack, generator = _apart(per_order(step))
    return {
        "stack_cpu_ms_per_order": round(stack, 3),
        "generator_cpu_ms_per_order": round(generator, 3),
        "orders_per_s_without_generator_cores": round(cores * 1000 / stack, 1) if stack else None,
        "orders_per_s_with_generator_cores": round(cores * 1000 / (stack + generator), 1) if stack else None,
    }


def baseline_of(previous: dict[str, Any]) -> dict[str, Any]:
    """What this run is compared with, from the previous report's JSON: its headline step's CPU per order
    per process and its payments-alone figures."""
    steps = previous["pipeline"]["steps"]
    step = previous["pipeline"]["best"] or steps[0]
    payments = previous["isolated"]["payments"]
    return {
        "commit": previous.get("source", {}).get("commit", "unknown"),
        "target_rate": step["target_rate"],
        "orders_per_s": step["orders_per_s"],
        "cpu_ms_per_order": per_order(step),
        # earlier reports counted CPU over the whole step, scoring included; this one from first order to
        # last settlement
        "cpu_window": "first order to last settlement" if "measured_s" in step else "the whole step, scoring too",
        "payments_callbacks_per_s": payments.get("callbacks_per_s"),
        "payments_orders_per_s": payments.get("orders_per_s"),
        "payments_cpu_ms_per_callback": payments.get("payments_cpu_ms_per_callback"),
        "payments_cpu_ms_per_order": payments.get("payments_cpu_ms_per_order"),
        "reconciler_engine_events_per_s": previous["isolated"].get("reconciler_engine", {}).get("events_per_s"),
    }


def before_after(report: dict[str, Any], step: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """A table of CPU ms per order per process: before (the baseline) and after (`step` of this run)."""
    after = per_order(step)
    base = report.get("baseline")
    before = base["cpu_ms_per_order"] if base else {}
    names = list(dict.fromkeys([*after, *before]))
    rows = [[name, before.get(name), after.get(name)] for name in names]
    rows.append(["all but the generator", _total(before, stack=True), _total(after, stack=True)])
    rows.append(["all", _total(before), _total(after)])
    header = ["process", f"before: ms per order ({_where(base)})", f"after: ms per order ({step['target_rate']:g}/s)"]
    return header, rows


def _where(base: dict[str, Any] | None) -> str:
    if not base:
        return "no earlier report"
    return f"{base['commit']}, {base['target_rate']:g}/s, {base['cpu_window']}"


def _total(costs: dict[str, float], stack: bool = False) -> float | None:
    if not costs:
        return None
    return round(sum(ms for name, ms in costs.items() if not (stack and name in GENERATORS)), 3)


def payments_cost(payments: dict[str, Any], phase: str) -> str:
    """payments alone: CPU ms per callback (or per order placed) of payments / PostgreSQL / the broker."""
    return " / ".join(_ms(payments.get(f"{name}_cpu_ms_per_{phase}")) for name in ("payments", "postgres", "broker"))


def generator_rows(step: dict[str, Any], cores: int, target: float) -> list[list[Any]]:
    """Summary rows with the load generator apart: what it was, its CPU per order next to the stack's, and the
    orders/s the cores carry at that CPU per order without and with the generator's share."""
    fit = capacity(step, cores)
    return [
        ["load generator", step.get("generator", "n/a"), ""],
        [
            "CPU ms per order: stack / load generator",
            f"{_ms(fit['stack_cpu_ms_per_order'])} / {_ms(fit['generator_cpu_ms_per_order'])}",
            f"{cores * 1000 / target:g} (stack)",
        ],
        [
            f"orders/s {cores} cores carry at that CPU per order: stack only / generator's cores counted",
            f"{_ms(fit['orders_per_s_without_generator_cores'])} / {_ms(fit['orders_per_s_with_generator_cores'])}",
            f"{target:,}",
        ],
    ]


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.3g}" if value < 1000 else f"{value:,.0f}"
