"""Raw results of one aggregation: what an engine hands back, before any metric policy.

Every engine (user-space DAMON over an operations set, kernel DAMON through sysfs, the
referenced-bytes curves of clear_refs) ends an aggregation with one :class:`Aggregation`:
per target, per region, the address range, the resident bytes and whatever the engine
knows of access. Nothing here says what "working set" or "cold" means; that is the summary
layer's job (:mod:`exporter.summary`), as ``mm/damon/stat.c`` and damo's reports compute
from the kernel's raw regions. Immutable, so the sampler can publish it by reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

#: (name, labels): a target's identity. ``group_by`` makes several targets of one name.
TargetKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class RegionRecord:
    """One region of one process at the end of an aggregation.

    What is known of access comes in one of two forms:

    - a *point*: ``nr_accesses`` of ``nr_checks`` samples saw an access this aggregation,
      and ``idle_seconds`` is how long the whole region has gone unaccessed: 0 when
      ``nr_accesses`` > 0, else the seconds since the last sample that saw an access. If no
      sample ever did (``seen_accessed`` False: memory new to us, or never touched while
      watched), it is the seconds since we began watching, a lower bound: such a region
      may be called cold once watched that long, but never in the working set, because
      nothing was seen. ``age`` is DAMON's (aggregations the pattern held), for reference;
    - a *distribution* (``idle_distribution`` non-empty): pairs ``(seconds, bytes)``, the
      resident bytes of the region *not* accessed within ``seconds``, for increasing
      ``seconds``. Engines that only know how many bytes were touched, not which, give
      this (clear_refs' referenced-bytes curve). ``idle_seconds`` is then unused. Idle
      time is a lower bound, as with DAMON's age: bytes untouched at point ``s_i`` but
      touched by ``s_{i+1}`` count as idle for ``s_i``; bytes untouched at the last point
      count as idle for that long, never longer.
    """

    pid: int
    start: int
    end: int
    resident_bytes: int
    nr_accesses: int = 0
    nr_checks: int = 0
    age: int = 0
    idle_seconds: float = 0.0
    idle_distribution: tuple[tuple[float, int], ...] = ()
    #: with a distribution: bytes seen accessed within one aggregation interval (the
    #: frequency histogram counts them at 1, the rest of the resident bytes at 0)
    accessed_bytes: int = 0
    seen_accessed: bool = True
    #: distribution records (clear_refs): wall time of the clear that began the current
    #: referenced-bytes period, and the bytes referenced since (the promotion tracker reads
    #: first touches from its growth: bytes untouched since the clear are proven idle)
    period_start: float = 0.0
    period_referenced: int = 0
    #: the bytes referenced in the period before it, at its last read (right before the
    #: clear): first touches after the last aggregation of that period are seen only there
    closed_referenced: int = 0
    #: bytes by which any figure of the record may be off because its counts were scaled
    #: from the mapping's pages to its pages' shares (clear_refs: smaps says how many bytes
    #: were touched, not whether private or shared ones); in the summary's error figures
    share_error_bytes: int = 0
    #: distribution records: (horizon seconds, bytes) by which the figure at that idle time
    #: may be off now, the reads proving only bounds on it between an engine's exact points
    #: (clear_refs between its clears); in the summary's working-set and cold errors
    present_error_bytes: tuple[tuple[float, int], ...] = ()
    #: the part of ``resident_bytes`` in pages other page tables map too. Every engine
    #: counts a page by its share (``PAGE_SIZE / mappers``, as PSS does), so the target's
    #: processes together count a page they all map once; the summary also lets the page be
    #: as recently accessed as its most recent user in the target (see exporter.summary)
    shared_bytes: int = 0
    #: which memory the shared part is, where the engine read it: (address, PFN) of the
    #: present pages it read at addresses that are multiples of a power of two (so two
    #: regions over the same addresses read the same addresses). Two processes' regions are
    #: the same memory only where they read one frame at one address. None: not read (the
    #: summary then takes the same addresses in processes of one target as the same pages)
    frames: tuple[tuple[int, int], ...] | None = None
    #: whose samples ``nr_accesses`` of ``nr_checks`` are: (pid, start, end) of the region
    #: that drew them, where the summary's sharing pass gave a piece of shared memory another
    #: process' view; None: the record's own. Pieces carrying one region's samples are one
    #: draw, not several (exporter.summary.stat.unproven_bytes)
    evidence: tuple[int, int, int] | None = None

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def frequency(self) -> float:
        """Share of this aggregation's valid samples that saw an access (0..1); for a
        distribution record, the share of its resident bytes seen accessed."""
        if self.idle_distribution:
            return min(1.0, self.accessed_bytes / self.resident_bytes) if self.resident_bytes else 0.0
        return self.nr_accesses / self.nr_checks if self.nr_checks else 0.0

    def to_dict(self) -> dict:
        d = {
            "pid": self.pid,
            "start": self.start,
            "end": self.end,
            "nr_accesses": self.nr_accesses,
            "nr_checks": self.nr_checks,
            "age": self.age,
            "idle_seconds": self.idle_seconds,
            "seen_accessed": self.seen_accessed,
            "resident_bytes": self.resident_bytes,
            "shared_bytes": self.shared_bytes,
            "frequency": round(self.frequency, 6),
        }
        if self.idle_distribution:
            d["idle_distribution"] = [[s, b] for s, b in self.idle_distribution]
        return d


@dataclass(frozen=True, slots=True)
class WindowStratum:
    """Pages drawn at random from one region when a page window opened, read when it closed.

    ``accessed_share`` is the share of the region's resident bytes (each page by its share,
    as PSS counts it) that the read pages say were accessed within the window, and
    ``pages`` how many pages that share rests on (Kish's effective count where pages weigh
    differently; 0: none could be read, nothing is known of the region).
    """

    pid: int
    start: int
    end: int
    resident_bytes: int
    pages: int
    accessed_share: float


class FileMapping(NamedTuple):
    """One mapping of a file (shmem included: a shared anonymous mapping or SysV segment is
    a file of its own) by one process: ``[start, end)`` of ``pid`` maps the file's bytes
    from ``offset`` on. A page of a file at one offset is one page wherever it is mapped,
    so the summary matches shared pages of processes that map one file at different
    addresses by offset (:mod:`exporter.summary.file_identity`)."""

    pid: int
    start: int
    end: int
    device: int
    inode: int
    offset: int


@dataclass(frozen=True)
class PageWindow:
    """Random pages of every region of a target, marked idle at ``started_at`` and read at
    ``read_at`` (wall clock), ``horizon`` seconds apart: which pages were used within a
    window of that length, whatever the regions' pages look like (see the page_idle
    engine's page windows)."""

    horizon: float
    started_at: float
    read_at: float
    strata: tuple[WindowStratum, ...]


@dataclass(frozen=True)
class TargetRecords:
    """One target (a group of processes) at the end of an aggregation, raw."""

    name: str
    pids: tuple[int, ...]
    regions: tuple[RegionRecord, ...]
    aggregated_at: float  # wall clock (seconds since the epoch)
    labels: tuple[tuple[str, str], ...] = ()
    errors: tuple[str, ...] = ()
    max_regions: int = 0  # region cap in effect (0 where the engine has none)
    #: (horizon seconds, wall time) where the figure at that idle time was measured
    #: earlier than ``aggregated_at`` (the oldest measurement used); empty where every
    #: figure is measured at each aggregation
    measured_at: tuple[tuple[float, float], ...] = ()
    #: processes listed for the target that the engine does not monitor, by error kind
    #: (permission, io, limit, ...): found by discovery, not in ``pids``
    not_monitored: tuple[tuple[str, int], ...] = ()
    #: regions after merging, before this aggregation's split (what the kernel's
    #: damon_aggregated tracepoint shows); DAMON splits only while this is at most half the
    #: cap, so the CPU budget keeps caps above twice it. 0 where the engine does not say.
    nr_merged: int = 0
    #: reads that found the accessed bits of one of the target's processes cleared by
    #: someone else (reclaim, a kernel DAMON scheme, another monitor), since the engine began
    #: watching the target; engines that cannot tell leave it 0 (see the metric's backends)
    accessed_bits_resets: int = 0
    #: the last page window read at each horizon (engines without page windows: none)
    windows: tuple[PageWindow, ...] = ()
    #: file mappings of the target's processes over their shared regions, where the engine
    #: read them (only targets with shared regions in two processes or more need them)
    file_mappings: tuple[FileMapping, ...] = ()

    @property
    def key(self) -> TargetKey:
        return (self.name, self.labels)


@dataclass(frozen=True)
class EngineStats:
    """Counters since the engine started (monotonic, for ``_total`` metrics)."""

    checks_total: int = 0
    discarded_total: int = 0
    aggregations_total: int = 0
    errors_total: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Aggregation:
    """Everything one aggregation produced, raw. Immutable; publish by reference swap."""

    backend: str
    taken_at: float  # wall clock
    sample_interval: float
    aggregation_interval: float
    targets: tuple[TargetRecords, ...]
    stats: EngineStats = field(default_factory=EngineStats)
    warnings: tuple[str, ...] = ()
    #: True where an access check looks at the physical page (page_idle's rmap walk: a page
    #: one process uses reads as used from every process mapping it); False where it looks at
    #: one process' own page-table entries (kernel DAMON's vaddr checks, clear_refs)
    access_per_page: bool = False
