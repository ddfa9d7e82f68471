"""The engine seam: what the sampler drives, whatever watches memory underneath.

The role ``struct damon_ctx`` plus ``kdamond_fn`` play in the kernel. An engine is given
targets (groups of processes) and attributes, is stepped by the sampler, and ends each
aggregation with raw :class:`~exporter.model.records.Aggregation` records. It knows nothing
of metric policy (working set, cold age, buckets: :mod:`exporter.summary`) and nothing of
discovery: the sampler owns the schedule and changes targets, caps and attributes only
between steps (the kernel's ``damon_call()`` model), so no callback ever runs from an
engine back up.

Engines:

- :class:`~exporter.engines.page_idle.monitor.Monitor`: DAMON's loop in user space over an operations
  set (page_idle; simulated memory in tests);
- :class:`~exporter.engines.clear_refs.ReferencedBytesEngine`: referenced-bytes curves from
  ``clear_refs`` and ``smaps``;
- :class:`~exporter.engines.damon_sysfs.DamonSysfsEngine`: the kernel's own DAMON.

:mod:`exporter.engines.registry` is the one list of them.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable

from exporter.model.attrs import MonitoringAttrs
from exporter.model.process import ProcessRef
from exporter.model.records import Aggregation, EngineStats, TargetKey


@dataclass(frozen=True)
class TargetSpec:
    """What to monitor under one name: the processes, and labels to carry along."""

    name: str
    processes: tuple[ProcessRef, ...]
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> TargetKey:
        return (self.name, self.labels)


class Engine(abc.ABC):
    """One way of seeing memory access. Called from one sampler thread only."""

    #: backend name as used in flags, configs and the ``backend`` label
    name: ClassVar[str] = "abstract"
    #: True where the region cap bounds the cost (the CPU budget may lower it); False where
    #: regions are given by the memory layout (whole mappings) and the cap means nothing
    uses_region_cap: ClassVar[bool] = True
    #: True where the kernel takes the samples and the exporter's own work comes once per
    #: aggregation (reading the regions back): the CPU budget then stretches the aggregation
    #: interval with the sample interval, as that is what lowers the exporter's part
    samples_in_kernel: ClassVar[bool] = False
    #: why this engine was chosen (set by the registry; shown in logs, landing page, CLI)
    selection_reason: str = ""
    #: the same as bounded labels: backends ``auto`` passed over before this one, each with
    #: why in one word: ``unavailable`` (its check failed), ``refused`` (building it raised)
    #: or ``failed`` (it failed before its first aggregation)
    passed_over: tuple[tuple[str, str], ...] = ()

    #: how the engine waits one sample interval; the sampler swaps in ``stop.wait`` so that
    #: a stop wakes it at once, tests a virtual clock
    sleep: Callable[[float], object] = staticmethod(time.sleep)  # type: ignore[assignment]

    @property
    @abc.abstractmethod
    def attrs(self) -> MonitoringAttrs:
        """The attributes in effect."""

    @abc.abstractmethod
    def set_attrs(self, attrs: MonitoringAttrs) -> None:
        """New attributes; they take effect at the next aggregation (an online commit)."""

    @abc.abstractmethod
    def set_targets(self, specs: Iterable[TargetSpec]) -> None:
        """Replace the set of targets. Processes already watched keep their history; new
        ones start now; processes no longer listed are dropped."""

    @abc.abstractmethod
    def step(self) -> Aggregation | None:
        """Run about one sample interval; the raw records when an aggregation ended."""

    def set_horizons(self, seconds: Iterable[float], *, returns_after: float | None = None) -> None:
        """The idle times the summary will ask about (``working_set_window``, ``cold_age``),
        and the idle time after which an access counts as a return (``cold_age``).

        Engines that measure each region's idle time ignore this. An engine that only knows
        how many bytes were touched since some moment (clear_refs) uses it to measure at
        exactly those moments, and to watch long enough after each moment for returns to
        show; it is not metric policy, only when to look.
        """

    def shortest_counted_return(self, aggregation_interval: float) -> float:
        """The shortest return of cold memory the promotion counter counts by its bytes, in
        seconds, at ``aggregation_interval``. A region's samples decide a return once per
        aggregation, at the share of its checks that saw an access: memory back for ``L``
        seconds of an aggregation of ``A`` counts about ``L / A`` of its bytes, inside the
        published error, and by its bytes from one aggregation on. Engines that keep every
        touch until they read it say less."""
        return aggregation_interval

    def set_region_cap(self, key: TargetKey, cap: int | None) -> None:
        """Lower one target's region cap (the CPU budget); None restores the configured one."""

    def region_cap(self, key: TargetKey) -> int:
        """The region cap in effect for one target."""
        return self.attrs.max_regions

    @abc.abstractmethod
    def probe(self, proc: ProcessRef) -> None:
        """Raise ProcessGone or AccessDenied (saying which privilege) if ``proc`` cannot be
        monitored; the ``snapshot`` command fails early on it instead of printing nothing."""

    @abc.abstractmethod
    def live_processes(self, key: TargetKey) -> int:
        """How many of the target's processes are still being monitored."""

    @abc.abstractmethod
    def stats(self) -> EngineStats:
        """Counters since the engine started."""

    def kernel_cpu_seconds(self) -> float:
        """CPU the kernel spends for this engine outside the sampler thread (kernel DAMON's
        kdamond), in seconds since the engine started; 0 where all its work is the sampler's.
        The CPU budget counts it with the sampler's: the kernel's cost is the exporter's."""
        return 0.0

    def interference(self) -> list[str]:
        """Human-readable reasons why results may be wrong right now; empty when none known."""
        return []

    def close(self) -> None:
        """Release everything (files, kernel state); the engine is stopping."""
