"""Scrapes as Prometheus does them: each target's /metrics text parsed, the target's job and instance
labels added, `up` recorded, and every sample kept step by step so a promtool test can replay it."""

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
"""A series: its labels, `__name__` included, sorted."""

_CREATED = "_created"
_WITH_CREATED = {"counter", "histogram", "summary"}


@dataclass
class Target:
    """One scraped process: its job (the scrape config's job_name), its instance and its registry. A target
    that is down answers no scrape (`up` is 0, its series go stale); one not discovered has no `up` at all."""

    job: str
    instance: str
    registry: CollectorRegistry
    up: bool = True
    discovered: bool = True


def scrape(target: Target) -> dict[Labels, float]:
    """What a scrape of `target`'s /metrics stores: every sample, with job and instance added.

    prometheus_client's `<name>_created` samples (creation times of counters and histograms) are left out:
    they are real series, but no rule or dashboard reads them, and they would only bloat the promtool input.
    """
    families = list(text_string_to_metric_families(generate_latest(target.registry).decode()))
    with_created = {f.name for f in families if f.type in _WITH_CREATED}
    samples: dict[Labels, float] = {}
    for family in families:
        if family.name.endswith(_CREATED) and family.name.removesuffix(_CREATED) in with_created:
            continue
        for sample in family.samples:
            labels = {**sample.labels, "__name__": sample.name, "job": target.job, "instance": target.instance}
            samples[tuple(sorted(labels.items()))] = sample.value
    return samples


@dataclass
class Timeline:
    """The samples of every target at each step (None where a target was down or a series absent)."""

    targets: list[Target]
    steps: int = 0
    values: dict[Labels, list[float | None]] = field(default_factory=dict)

    def record(self) -> None:
        seen: dict[Labels, float] = {}
        for target in (t for t in self.targets if t.discovered):
            up = (("__name__", "up"), ("instance", target.instance), ("job", target.job))
            seen[up] = 1.0 if target.up else 0.0
            if target.up:
                seen.update(scrape(target))
        for labels, value in seen.items():
            self.values.setdefault(labels, [None] * self.steps).append(value)
        self.steps += 1
        for history in self.values.values():
            if len(history) < self.steps:
                history.append(None)

    def series(self) -> set[Labels]:
        return set(self.values)


def selector_text(labels: Labels) -> str:
    """The series as promtool's input_series writes it: name{label="value",...}."""
    name = dict(labels)["__name__"]
    rest = ",".join(f'{k}="{_escape(v)}"' for k, v in labels if k != "__name__")
    return f"{name}{{{rest}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def values_text(history: Iterable[float | None]) -> str:
    """promtool's expanding notation, one value per step: `_` for a missing sample."""
    return " ".join("_" if v is None else format(v, ".12g") for v in history)
