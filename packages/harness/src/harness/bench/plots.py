"""The report's plots (matplotlib, Agg backend: no display needed)."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PEERS = (("reconciler", "reconciler (faust)"), ("bytewax", "Bytewax"), ("sql", "periodic SQL"))


def _latency(ax: Any, steps: list[dict[str, Any]], keys: tuple[str, str], unit: str, target: float) -> None:
    rates = [s["orders_per_s"] for s in steps]
    for key, style, label in zip(keys, ("o-", "s--"), ("p50", "p99"), strict=True):
        values = [float("nan") if s[key] is None else s[key] for s in steps]
        ax.plot(rates, values, style, label=label)
    ax.axhline(target, color="red", linewidth=1, label=f"target {target:g} {unit}")
    ax.set_xscale("log")
    ax.set_xlabel("orders/s placed")
    ax.set_ylabel(unit)
    ax.legend()
    ax.grid(alpha=0.3)


def pipeline_plot(steps: list[dict[str, Any]], out: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    _latency(left, steps, ("pay_to_credit_p50_s", "pay_to_credit_p99_s"), "s", 1.0)
    left.set_title("pay to credit")
    _latency(right, steps, ("status_to_push_p50_ms", "status_to_push_p99_ms"), "ms", 100.0)
    right.set_title("status change to push")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def cpu_plot(steps: list[dict[str, Any]], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{s['target_rate']:g}/s" for s in steps]
    bottom = [0.0] * len(steps)
    for name in steps[0]["processes"]:
        values = [s["processes"][name]["cores"] for s in steps]
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("cores busy (CPU s / wall s)")
    ax.set_xlabel("rate step")
    ax.set_title("CPU per process at each step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def peers_plot(peers: dict[str, Any], out: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [label for _, label in PEERS]
    rates = [peers["catch_up"][key].get("events_per_s") or 0 for key, _ in PEERS]
    left.bar(names, rates, color=["tab:blue", "tab:orange", "tab:green"])
    left.set_yscale("log")
    left.set_ylabel("events/s")
    left.set_title("catch-up: whole log, one process")
    for q, offset in (("p50", -0.2), ("p99", 0.2)):
        values = [peers["live"][key][f"detection_{q}_s"] or 0 for key, _ in PEERS]
        right.bar([i + offset for i in range(len(names))], values, width=0.4, label=q)
    right.set_xticks(range(len(names)), names)
    right.set_ylabel("s after the deadline")
    right.set_title("live: detection delay")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
