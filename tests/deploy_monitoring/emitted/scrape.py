"""Scrapes as Prometheus does them: each target's samples as its /metrics page shows them, the target's job
and instance labels added, `up` recorded, and every sample kept step by step so a promtool test can replay it."""

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

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
    # The samples /metrics is written from (generate_latest renders these very families, and Prometheus's
    # parser gives them back unchanged); rendering and parsing the text at every step was most of the time
    # the promtool tests took.
    samples: dict[Labels, float] = {}
    extra = (("instance", target.instance), ("job", target.job))
    for family in target.registry.collect():
        created = family.name + _CREATED if family.type in _WITH_CREATED else None
        for sample in family.samples:
            if sample.name == created:
                continue
            labels = {**sample.labels, "__name__": sample.name, **dict(extra)}
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
