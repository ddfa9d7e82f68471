"""What a ``snapshot`` run produced: the frames (one per aggregation) and how it ran."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.attrs import MonitoringAttrs
from ..core.snapshot import MonitorSnapshot


@dataclass(frozen=True)
class Frame:
    """One aggregation's snapshot and when it ended, in seconds after the run started."""

    elapsed: float
    snapshot: MonitorSnapshot


@dataclass
class SnapshotRun:
    """Everything the renderers need. ``frames`` may have been thinned (every other one
    dropped when a long run exceeds the bound) but always covers the whole run."""

    backend: str
    backend_reason: str
    attrs: MonitoringAttrs
    cold_age: float
    working_set_window: float
    requested_duration: float
    elapsed: float = 0.0
    samples: int = 0
    aggregations: int = 0
    frames: list[Frame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def last(self) -> MonitorSnapshot | None:
        return self.frames[-1].snapshot if self.frames else None
