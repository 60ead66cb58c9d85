"""A fault schedule is data: a list of timed faults, each at a second of the run, on a target, for a while.

Kinds:
- `kill`: SIGKILL one service (`target`); it is started again at once, as compose's restart policy would.
- `broker_restart`: stop the broker (SIGTERM, controlled shutdown), keep it down `duration_s`, start it again.
- `postgres_restart`: stop PostgreSQL (fast shutdown), keep it down `duration_s`, start it again.
- `read_only`: PostgreSQL turns read-only for `duration_s` (as after a failover to a replica): every session is
  ended and new transactions are read-only; then it is writable again.
- `disk_full`: PostgreSQL's filesystem is filled for `duration_s`, then freed.
"""

import itertools
import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from credited.stack.local import SERVICES


class FaultKind(StrEnum):
    KILL = "kill"
    BROKER_RESTART = "broker_restart"
    POSTGRES_RESTART = "postgres_restart"
    READ_ONLY = "read_only"
    DISK_FULL = "disk_full"


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    kind: FaultKind
    target: str = ""
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.at_s < 0 or self.duration_s < 0:
            raise ValueError(f"{self}: times must not be negative")
        if (self.kind is FaultKind.KILL) != (self.target in SERVICES):
            raise ValueError(f"{self}: a kill names one of {SERVICES}, and only a kill names a service")
        if self.kind is not FaultKind.KILL and self.duration_s <= 0:
            raise ValueError(f"{self}: {self.kind} needs a duration")

    @property
    def label(self) -> str:
        return f"{self.kind} {self.target}".strip()


@dataclass(frozen=True)
class Schedule:
    """Faults in time order, and the traffic they run under."""

    name: str
    orders: int
    rate: float
    faults: tuple[Fault, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "faults", tuple(sorted(self.faults, key=lambda f: f.at_s)))
        windows = [(f.at_s, f.at_s + f.duration_s) for f in self.faults if f.kind is not FaultKind.KILL]
        for (_, end), (start, _) in itertools.pairwise(windows):
            if start < end:
                raise ValueError(f"{self.name}: outages overlap ({start}s starts before {end}s ends)")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for fault in self.faults:
            out[fault.label] = out.get(fault.label, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "orders": self.orders, "rate": self.rate, "faults": [asdict(f) for f in self.faults]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Schedule":
        faults = tuple(
            Fault(float(f["at_s"]), FaultKind(f["kind"]), f.get("target", ""), float(f.get("duration_s", 0)))
            for f in data["faults"]
        )
        return cls(str(data["name"]), int(data["orders"]), float(data["rate"]), faults)

    @classmethod
    def load(cls, path: Path) -> "Schedule":
        return cls.from_json(json.loads(path.read_text()))

    def only(self, kinds: set[FaultKind]) -> "Schedule":
        """The same traffic with only the faults of these kinds (a baseline per kind)."""
        kept = tuple(f for f in self.faults if f.kind in kinds)
        return Schedule(f"{self.name}[{','.join(sorted(kinds))}]", self.orders, self.rate, kept)


def full(orders: int = 10_000, rate: float = 20.0) -> Schedule:
    """`make chaos`: three SIGKILLs of each service, two broker and two PostgreSQL restarts, a read-only period
    and a disk-full period, spread over the traffic (10,000 orders at 20/s: about 500 s) and never overlapping."""
    span = orders / rate
    outages = [
        (FaultKind.BROKER_RESTART, 20.0),
        (FaultKind.POSTGRES_RESTART, 15.0),
        (FaultKind.READ_ONLY, 30.0),
        (FaultKind.BROKER_RESTART, 20.0),
        (FaultKind.DISK_FULL, 30.0),
        (FaultKind.POSTGRES_RESTART, 15.0),
    ]
    faults = [Fault(span * (i + 1) / (len(outages) + 1), kind, "", d) for i, (kind, d) in enumerate(outages)]
    kills = [name for _ in range(3) for name in SERVICES]
    faults += [Fault(span * (i + 0.5) / len(kills), FaultKind.KILL, name) for i, name in enumerate(kills)]
    return Schedule("full", orders, rate, tuple(faults))


def ci(orders: int = 600, rate: float = 10.0) -> Schedule:
    """The short schedule CI runs: one broker restart, one PostgreSQL restart, one SIGKILL of each service."""
    span = orders / rate
    faults = [
        Fault(span * 0.25, FaultKind.BROKER_RESTART, "", 10.0),
        Fault(span * 0.6, FaultKind.POSTGRES_RESTART, "", 8.0),
    ]
    faults += [Fault(span * (0.1 + 0.2 * i), FaultKind.KILL, name) for i, name in enumerate(SERVICES)]
    return Schedule("ci", orders, rate, tuple(faults))


OUTAGE_S = {
    FaultKind.BROKER_RESTART: 20.0,
    FaultKind.POSTGRES_RESTART: 15.0,
    FaultKind.READ_ONLY: 30.0,
    FaultKind.DISK_FULL: 30.0,
}


def baseline(kind: FaultKind, orders: int = 1500, rate: float = 15.0) -> Schedule:
    """One kind of fault alone, so what the checker finds can be laid at its door: a SIGKILL of each service, or
    one outage longer than the default chaos threshold (10 s) a third of the way into the traffic."""
    span = orders / rate
    if kind is FaultKind.KILL:
        faults = tuple(Fault(span * (i + 1) / 5, kind, name) for i, name in enumerate(SERVICES))
    else:
        faults = (Fault(span * 0.3, kind, "", OUTAGE_S[kind]),)
    return Schedule(f"baseline-{kind}", orders, rate, faults)
