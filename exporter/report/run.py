"""What a ``snapshot`` command produced: a recording (damo's word), one frame per aggregation."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.model.attrs import MonitoringAttrs
from exporter.summary import Policy, Summary


@dataclass(frozen=True)
class Frame:
    """One aggregation's summary and when it ended, in seconds after the run started."""

    elapsed: float
    summary: Summary


@dataclass
class Recording:
    """Everything the renderers need. ``frames`` may have been thinned (every other one
    dropped when a long run exceeds the bound) but always covers the whole run."""

    backend: str
    backend_reason: str
    attrs: MonitoringAttrs
    policy: Policy
    requested_duration: float
    elapsed: float = 0.0
    samples: int = 0
    aggregations: int = 0
    frames: list[Frame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def cold_age(self) -> float:
        return self.policy.cold_age

    @property
    def working_set_window(self) -> float:
        return self.policy.working_set_window

    @property
    def last(self) -> Summary | None:
        return self.frames[-1].summary if self.frames else None
