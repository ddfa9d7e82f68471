"""The ``damon_sysfs`` engine: the kernel's own DAMON does the sampling; we read and weigh.

Where the kernel has DAMON with virtual-address operations and its sysfs interface
(``CONFIG_DAMON_VADDR``, ``CONFIG_DAMON_SYSFS``, Linux 6.6 or later), a kdamond samples at
kernel cost (5 ms intervals are cheap there) and the exporter only reads the results once
per aggregation. How (:mod:`exporter.engines.damon_sysfs.tree` has the interface facts):

- **One kdamond, one context, one DAMON target per process.** The context gets the
  exporter's intervals; its region bounds are the per-target bounds times the number of
  targets with processes (the kernel bounds a whole context, we bound targets).
- **Attribution.** Scheme ``i`` is a ``stat`` scheme (it does nothing to memory) over
  every access pattern, with a ``target`` DAMOS filter that excludes every region not of
  target ``i``. Writing ``update_schemes_tried_regions`` to ``state`` makes the kernel list,
  at the end of the next aggregation, each scheme's regions with ``nr_accesses`` and ``age``:
  scheme ``i``'s list is exactly process ``i``'s regions, whatever their addresses, so
  processes with overlapping virtual ranges are kept apart by construction (the tried
  regions of one context do not say which target a region belongs to; the filter does).
- **Residency.** The kernel counts non-resident virtual space as "not accessed"; every
  region is weighed by the resident bytes pagemap's present bits give (bounded cost, as
  the other engines), so the numbers mean what they mean elsewhere.
- **Ownership.** kdamonds are shared by the whole machine. We start only when
  ``nr_kdamonds`` is 0 (else refuse, and ``auto`` falls back), then own kdamond 0: we write
  a marker (:class:`Marker`) before creating it, check at every aggregation that nobody
  changed it (``nr_kdamonds`` still 1, the same kdamond thread), and turn it off and set
  ``nr_kdamonds`` to 0 on close (the sampler closes on SIGTERM; ``snapshot`` on exit and
  Ctrl-C). After a crash (SIGKILL, OOM kill) the marker lets the next exporter reclaim the
  leftover kdamond: same boot, the recorded exporter process gone, ``nr_kdamonds`` 1, and
  kdamond 0 either running with the thread pid we recorded or off.
- **Process churn.** New processes take free target slots or are appended; a commit
  (``state`` ``commit``) hands the change to the running kdamond, which keeps the history
  of the targets that did not change. The kernel terminates a kdamond whose commit names a
  dead pid, so every pid is checked right before a commit; if it stopped anyway (or
  stopped by itself because all its processes exited) it is turned on again. A target
  slot given to another process has its ages capped at the time since, so no process
  inherits another's idle time.
"""

from __future__ import annotations

import bisect
import errno
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from exporter.engines.bookkeeping import Failures
from exporter.engines.damon_sysfs.ownership import (
    DEFAULT_STATE_DIR,
    DENIED_HINT,
    NAME,
    STATE_DIR_ENV,
    Marker,
    _start_time,
    available,
    boot_id,
    damon_root,
)
from exporter.engines.damon_sysfs.tree import (
    ContextAttrs,
    KdamondTree,
    SysfsError,
    SysfsIO,
    TriedRegion,
    check_write_allowed,
)
from exporter.engines.identity import FileMaps, with_frames
from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import Engine, TargetSpec
from exporter.model.errors import (
    BackendUnavailable,
    ImageChanged,
    LimitReached,
    OpsError,
    ProcessGone,
)
from exporter.model.process import EXITED_STATES, ProcessRef
from exporter.model.records import (
    Aggregation,
    EngineStats,
    RegionRecord,
    TargetKey,
    TargetRecords,
)
from exporter.procfs.io import PosixIO
from exporter.procfs.pagemap import (
    PageCounts,
    Pagemap,
    frames_at,
    open_checked_pagemap,
    resident_bytes_pagemap,
    zero_page_pfn,
)
from exporter.procfs.parsers import check_same_process, live_thread, parse_stat, read_maps, read_stat

log = logging.getLogger(__name__)
#: processes monitored at once: one DAMON target and one scheme each; every aggregation the
#: kernel tries every scheme on every region, so its cost grows with processes x regions
DEFAULT_MAX_PROCESSES = 256
#: regions up to 64 MiB get their residency from one pagemap read (at most 128 KiB) rather
#: than 16 sampled ones: per syscall, the read-back is what this engine costs
RESIDENCY_EXACT_PAGES = 16384


#: Kernel DAMON's region limits belong to the context, and every monitored process is a
#: kernel target of the one context: the kernel starts each process with ``min_nr_regions``
#: regions (at least 3, one per big mapped area) and stops splitting, for all of them, once
#: the context holds more than ``max_nr_regions / 2``. Given a target's 10..100 as is, a few
#: processes start with about half the cap between them and the kernel never splits again, so a
#: large region with a sliver of hot memory reads as used whole. So the kernel gets the
#: targets' minimum divided among the processes, and room for every process to split: at least
#: this many regions of the cap per process (half of it before the kernel stops splitting).
REGIONS_PER_PROCESS = 20
#: damon_set_attrs() refuses a ``min_nr_regions`` below 3
KERNEL_MIN_REGIONS = 3
#: idle time carried per address bridges gaps between reads of up to this many aggregation
#: intervals (the longer of the current and the last one read)
HISTORY_BRIDGE = 4.0


class OwnershipLost(OpsError):
    """Someone else changed the kdamond we created; we stop using kernel DAMON."""

    kind = "damon_sysfs"


# -- the engine ----------------------------------------------------------------------------


def last_access(history: list[tuple[int, int, float]], start: int, end: int, kernel: float) -> float:
    """When the idle region ``[start, end)`` was last seen accessed (monotonic seconds).

    ``kernel`` is what the kernel's own age says (now minus age x aggregation interval).
    Kernel DAMON keeps ages per region and, on a merge, takes the size-weighted mean
    *truncated to whole aggregations*: a long-idle region beside a hot edge keeps absorbing
    slivers split off the edge with age 0, and its age never grows: never-touched memory
    beside a hot edge would read as working set for ever. So, as
    the user-space engine does, the time of the last access is carried per address: a
    region takes the size-weighted mean of what the last aggregation's regions recorded for the
    same addresses (``history``, sorted, non-overlapping), and the kernel's age for addresses
    they did not cover; the caller moves the share of it seen accessed to now.
    """
    weighted = 0.0
    known = 0
    i = max(0, bisect.bisect_right(history, (start, float("inf"), float("inf"))) - 1)
    while i < len(history) and history[i][0] < end:
        a, b, t = history[i]
        ov = min(b, end) - max(a, start)
        if ov > 0:
            weighted += t * ov
            known += ov
        i += 1
    size = end - start
    return (weighted + kernel * (size - known)) / size if size > 0 else kernel


@dataclass
class _Proc:
    key: TargetKey
    ref: ProcessRef
    pagemap: Pagemap
    assigned_at: float = 0.0  # monotonic time it got its kernel slot (caps inherited ages)
    #: the last aggregation's regions as (start, end, last access, monotonic): idle time is
    #: carried per address across the kernel's merges and splits (see :func:`last_access`)
    history: list[tuple[int, int, float]] = field(default_factory=list)
    history_at: float = 0.0  # when ``history`` was read


@dataclass
class _Target:
    spec: TargetSpec
    cap: int | None = None


Slot = tuple[TargetKey, ProcessRef]


class DamonSysfsEngine(Engine):
    """Kernel DAMON through its sysfs interface; one kdamond owned for the engine's life."""

    name = NAME  # type: ignore[assignment]
    uses_region_cap = True
    samples_in_kernel = True

    def __init__(
        self,
        attrs: MonitoringAttrs | None = None,
        *,
        sys_root: str = "/sys",
        proc_root: str = "/proc",
        io: SysfsIO | None = None,
        state_dir: str | None = None,
        max_processes: int = DEFAULT_MAX_PROCESSES,
        release: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._attrs = attrs or default_attrs()
        self.io = io or SysfsIO()
        self.proc_root = proc_root
        self.state_dir = state_dir or os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR)
        self.max_processes = max_processes
        self.clock = clock
        self.wall_clock = wall_clock
        self.rng = rng or random.Random()
        self.pio = PosixIO()
        self._file_maps = FileMaps(clock)
        self.tree = KdamondTree(damon_root(sys_root), self.io)
        self._targets: dict[TargetKey, _Target] = {}
        self._procs: dict[Slot, _Proc] = {}
        self._failures = Failures()
        self._slots: list[Slot | None] = []  # kernel target index -> process
        self._kernel_pids: list[int] | None = None  # pids as last written to the tree
        self._kernel_attrs: ContextAttrs | None = None
        self._dirty = True
        self._running = False
        self._kdamond_pid = -1
        self._owned = False
        self._lost = False
        self._configured = False  # the kernel took a configuration of ours at least once
        self._kdamond_cpu_done = 0.0  # CPU of kdamond threads of ours that have ended
        self._kdamond_cpu_seen = (-1, 0.0)  # (thread pid, its CPU when last read)
        self._checks = 0
        self._aggregations = 0
        self._last_aggregation_interval = 0.0  # of the last aggregation read
        self._zero_pfn = zero_page_pfn(self.pio, proc_root)
        # mapping counts of shared pages: a page several processes map counts by share
        self._counts = PageCounts.open(self.pio, proc_root)
        ok, why = available(proc_root=proc_root, sys_root=sys_root, io=self.io, state_dir=self.state_dir, release=release)
        if not ok:
            raise BackendUnavailable(f"{NAME} unavailable: {why}")
        self._take_ownership()

    # -- ownership -----------------------------------------------------------------------

    def _take_ownership(self) -> None:
        t = self.tree
        if t.read_nr_kdamonds() != 0:  # a reclaimable leftover (available() said so)
            log.warning("reclaiming a kdamond left behind by an exporter that exited", extra={"kv": {"root": t.root}})
            t.turn_off_and_remove()
            Marker.remove(self.state_dir)
        check_write_allowed(t.nr_kdamonds)
        me = os.getpid()
        start = _start_time(self.proc_root, me) or 0
        self._marker = Marker(boot_id(self.proc_root), os.path.realpath(t.root), me, start)
        try:
            self._marker.save(self.state_dir)
        except OSError as e:
            raise BackendUnavailable(
                f"{NAME} unavailable: cannot record ownership in {self.state_dir}: {e.strerror} "
                f"(set {STATE_DIR_ENV} to a writable directory)"
            ) from None
        self._owned = True
        try:
            t.create()
            # the feature checks need a scheme: write one now, with no target, then off
            t.set_targets([os.getpid()], None)
        except Exception as e:  # anything at all: give back what we created, then refuse
            self._release()
            raise BackendUnavailable(f"{NAME} unavailable: {e}") from None
        self._kernel_pids = None  # the probe target is not ours to keep

    def _release(self) -> None:
        """Give back what we created: off, nr_kdamonds 0, no marker."""
        if not self._owned:
            return
        self._owned = False
        self._running = False
        try:
            self.tree.turn_off_and_remove()
        except SysfsError as e:
            log.error("could not remove the kdamond", extra={"kv": {"err": str(e)}})
            return  # keep the marker: a restart may reclaim it
        Marker.remove(self.state_dir)
        log.info("kernel DAMON given back: kdamond off, nr_kdamonds 0", extra={"kv": {"root": self.tree.root}})

    def _check_ownership(self) -> None:
        """Raise OwnershipLost if the kdamond is no longer as we left it."""
        t = self.tree
        try:
            n = t.read_nr_kdamonds()
            state = t.state()
            pid = t.pid() if state == "on" else -1
        except (SysfsError, ValueError) as e:
            raise self._lose(f"cannot read the kdamond any more: {e}") from None
        if n != 1:
            raise self._lose(f"nr_kdamonds is {n}; the exporter created 1")
        if state == "on" and self._running and pid != self._kdamond_pid:
            raise self._lose(f"kdamond 0 now runs as pid {pid}, not {self._kdamond_pid}")
        if state == "on" and not self._running:
            raise self._lose("kdamond 0 was turned on by someone else")
        if state != "on" and self._running:
            # it ends by itself when all its processes exited, and on a commit it refused
            log.info("kdamond stopped; restarting it", extra={"kv": {"pid": self._kdamond_pid}})
            self._running = False
            self._kernel_pids = None
            self._dirty = True

    def _lose(self, why: str) -> OwnershipLost:
        self._lost = True
        self._owned = False
        self._running = False
        self._failures.count("damon_sysfs")
        Marker.remove(self.state_dir)
        msg = f"kernel DAMON changed under the exporter ({why}); leaving it alone"
        log.error(msg)
        return OwnershipLost(msg)

    # -- configuration -------------------------------------------------------------------

    @property
    def attrs(self) -> MonitoringAttrs:
        return self._attrs

    def set_attrs(self, attrs: MonitoringAttrs) -> None:
        if attrs != self._attrs:
            self._attrs = attrs
            self._dirty = True

    def set_region_cap(self, key: TargetKey, cap: int | None) -> None:
        t = self._targets.get(key)
        if t is not None and t.cap != cap:
            t.cap = cap
            self._dirty = True

    def region_cap(self, key: TargetKey) -> int:
        """The target's share of the kernel's ``max_nr_regions``: its ``max_regions`` (or the
        budget's lower cap), but at least REGIONS_PER_PROCESS for each of its processes."""
        t = self._targets.get(key)
        a = self.attrs
        cap = a.max_regions if t is None or t.cap is None else max(a.min_regions, min(a.max_regions, t.cap))
        return max(cap, REGIONS_PER_PROCESS * self.live_processes(key))

    def probe(self, proc: ProcessRef) -> None:
        open_checked_pagemap(self.pio, self.proc_root, proc, DENIED_HINT).close()

    def live_processes(self, key: TargetKey) -> int:
        return sum(1 for (k, _), _p in self._procs.items() if k == key)

    def set_targets(self, specs: Iterable[TargetSpec]) -> None:
        specs = list(specs)
        wanted: dict[Slot, None] = {}
        self._targets = {s.key: self._targets.get(s.key) or _Target(s) for s in specs}
        for s in specs:
            t = self._targets[s.key]
            t.spec = s
            for ref in sorted(set(s.processes)):
                wanted[(s.key, ref)] = None
        for slot in list(self._procs):
            if slot not in wanted:
                self._drop(slot)
                self._dirty = True  # it may still run: stop monitoring it at the next commit
        self._failures.set_targets(specs)
        for slot in wanted:
            if slot in self._procs or self._failures.has_failed(slot[1]):
                continue
            self._add(slot)

    def _add(self, slot: Slot) -> None:
        key, ref = slot
        if len(self._procs) >= self.max_processes:
            self._failures.fail([key], ref, LimitReached(
                f"not monitored: {NAME} monitors at most {self.max_processes} processes (one DAMON target and scheme each)"))
            return
        try:
            pm = open_checked_pagemap(self.pio, self.proc_root, ref, DENIED_HINT)
        except OpsError as e:
            self._failures.fail([key], ref, e)
            return
        self._procs[slot] = _Proc(key, ref, pm)
        try:
            i = self._slots.index(None)
            self._slots[i] = slot
        except ValueError:
            self._slots.append(slot)
        self._dirty = True

    def _drop(self, slot: Slot) -> None:
        p = self._procs.pop(slot, None)
        if p is not None:
            p.pagemap.close()
        for i, s in enumerate(self._slots):
            if s == slot:
                self._slots[i] = None
        # no commit for an exited process: its kernel target costs nothing until the next
        # commit, which needs every slot alive (see _compact)

    # -- applying to the kernel ----------------------------------------------------------

    def _context_attrs(self) -> ContextAttrs:
        """The kernel's limits for the one context all processes share (see
        REGIONS_PER_PROCESS): the targets' caps summed; their ``min_regions`` summed, then
        divided among the processes, since the kernel starts *each* process with that many."""
        a = self.attrs
        groups = {p.key for p in self._procs.values()} or {None}
        max_r = sum(self.region_cap(k) if k is not None else a.max_regions for k in groups)
        min_r = max(KERNEL_MIN_REGIONS, math.ceil(a.min_regions * len(groups) / max(1, len(self._procs))))
        return ContextAttrs(
            sample_us=max(1, round(a.sample_interval * 1e6)),
            aggr_us=max(1, round(a.aggregation_interval * 1e6)),
            update_us=max(1, round(a.update_interval * 1e6)),
            min_regions=min(min_r, max_r),
            max_regions=max_r,
        )

    def _compact(self) -> None:
        """Every slot a running process (a commit re-reads every pid): trailing holes are cut,
        others filled with the last process, whose ages are then capped like a new one's."""
        slots = self._slots
        while slots and slots[-1] is None:
            slots.pop()
        for i in range(len(slots)):
            if i >= len(slots):
                break
            if slots[i] is None:
                slots[i] = slots.pop()
                while slots and slots[-1] is None:
                    slots.pop()

    def _live_check(self) -> None:
        """Drop processes that exited: a commit naming a dead pid stops the kdamond."""
        for slot, p in list(self._procs.items()):
            try:
                check_same_process(self.pio, self.proc_root, p.ref, DENIED_HINT)
                if not p.pagemap.alive():
                    raise ProcessGone(f"process {p.ref.pid} exited")
            except ProcessGone as e:
                self._failures.fail([p.key], p.ref, e)  # counted and logged if it exec'ed
                self._drop(slot)
            except OpsError:
                pass  # keep; the read will report it

    def _kernel_pid(self, pid: int) -> int:
        """The pid to give kernel DAMON for process ``pid``: its own, or where its leader
        exited while its threads run on, a running thread's (DAMON takes the task's mm, and a
        zombie leader has none)."""
        try:
            st = parse_stat(self.pio.read_file(f"{self.proc_root}/{pid}/stat"))
        except (OSError, ValueError):
            return pid
        if st.state in EXITED_STATES:
            return live_thread(self.pio, self.proc_root, pid) or pid
        return pid

    def _apply(self) -> None:
        self._live_check()
        self._compact()
        now = self.clock()
        pids = [self._kernel_pid(s[1].pid) for s in self._slots if s is not None]
        old = self._kernel_pids if self._running else None
        for i, s in enumerate(self._slots):
            assert s is not None
            if old is None or i >= len(old) or old[i] != pids[i]:
                self._procs[s].assigned_at = now
        if not pids:
            if self._running:
                self.tree.command("off")
                self._running = False
            self._kernel_pids = None
            self._dirty = False
            return
        ca = self._context_attrs()
        if ca != self._kernel_attrs or not self._running:
            self.tree.set_attrs(ca)
            self._kernel_attrs = ca
        self.tree.set_targets(pids, self._kernel_pids)
        self._kernel_pids = pids
        if self._running:
            self.tree.command("commit")
        else:
            self.tree.command("on")
            self._running = True
            self._kdamond_pid = self.tree.pid()
            self._marker.kdamond_pid = self._kdamond_pid
            try:
                self._marker.save(self.state_dir)
            except OSError as e:
                log.error("cannot update the ownership marker", extra={"kv": {"err": str(e)}})
        self._configured = True
        self._dirty = False

    def start(self) -> None:
        """Configure and turn on the kdamond for the current targets now (the first step
        does it otherwise); bench/kernel_damon_compare.py runs the kernel alone this way."""
        self._check_ownership()
        if self._dirty:
            self._apply()

    # -- stepping ------------------------------------------------------------------------

    def step(self) -> Aggregation | None:
        """One aggregation: have the kernel list its regions (the write returns after the
        next aggregation ended), read them, weigh them by residency."""
        if self._lost:
            raise OwnershipLost("kernel DAMON changed under the exporter; this engine is closed")
        self._check_ownership()  # before any write of ours: it may no longer be ours
        if self._dirty:
            try:
                self._apply()
            except SysfsError as e:
                self._failures.count("damon_sysfs")
                if not self._configured:
                    # never worked here: not a passing problem, and ``auto`` should know it
                    raise BackendUnavailable(f"{NAME} unavailable: the kernel refused its first configuration: {e}") from None
                log.error("could not configure the kdamond", extra={"kv": {"err": str(e)}})
                self._running = self.tree.state() == "on"
                self._kernel_pids = None if not self._running else self._kernel_pids
                self._dirty = True
                self.sleep(self.attrs.aggregation_interval)
                return None
        if not self._running:
            self.sleep(self.attrs.aggregation_interval)
            return self._aggregation({})
        try:
            self.tree.command("update_schemes_tried_regions")
        except SysfsError as e:
            if e.errno == errno.EINVAL:  # it stopped between our check and the command
                self._check_ownership()
                return None
            if e.errno == errno.EBUSY:  # another DAMON sysfs user holds the lock
                self._failures.count("damon_sysfs")
                self.sleep(min(1.0, self.attrs.aggregation_interval))
                return None
            raise
        self._check_ownership()
        regions: dict[Slot, list[TriedRegion]] = {}
        for i, slot in enumerate(self._slots):
            if slot is not None and slot in self._procs:
                regions[slot] = self.tree.tried_regions(i)
        if regions and not any(regions.values()):
            # A running process always has regions; an update that returns every scheme's
            # list empty (Linux 6.12 does, now and then) is not an aggregation, and the next
            # update is a good one.
            log.debug("kernel DAMON listed no regions at all; skipping this update")
            return None
        return self._aggregation(regions)

    def _aggregation(self, regions: dict[Slot, list[TriedRegion]]) -> Aggregation:
        a = self.attrs
        aggr = a.aggregation_interval
        checks = a.max_nr_accesses
        now = self.clock()
        by_key: dict[TargetKey, list[RegionRecord]] = {k: [] for k in self._targets}
        pids: dict[TargetKey, set[int]] = {k: set() for k in self._targets}
        for slot, rs in regions.items():
            p = self._procs.get(slot)
            if p is None:
                continue
            try:
                # the kernel follows the pid across exec: the regions are published only
                # while the pid still runs the image matched (checked after reading them)
                check_same_process(self.pio, self.proc_root, p.ref, DENIED_HINT)
                resident = resident_bytes_pagemap(p.pagemap, [(r.start, r.end) for r in rs], self.rng,
                                                  self._zero_pfn, exact_pages=RESIDENCY_EXACT_PAGES,
                                                  counts=self._counts)
            except ProcessGone as e:
                self._failures.fail([p.key], p.ref, e)  # counted and logged if it exec'ed
                self._drop(slot)
                # an exited process costs nothing until the next commit; an exec'ed one is
                # still sampled by the kernel, so it is taken out at the next step
                self._dirty |= isinstance(e, ImageChanged)
                continue
            except OpsError as e:
                self._failures.note([p.key], p.ref, e)
                continue
            max_age = int((now - p.assigned_at) / aggr) if aggr > 0 else 0
            # history bridges a skipped update or two, and the first aggregation after the CPU
            # budget changed the intervals (it ends the old one's remainder plus a new one).
            # Dropped there, the kernel's truncated ages would take over and cold memory would
            # read as unknown or as working set. Beyond that we have not been looking, and only
            # the kernel's age knows
            if now - p.history_at > HISTORY_BRIDGE * max(aggr, self._last_aggregation_interval):
                p.history = []
            history = []
            for r, res in sorted(zip(rs, resident), key=lambda x: x[0].start):
                age = min(r.age, max_age)
                # the share of samples that saw an access estimates the share of the region
                # in use: that share is accessed now, the rest keeps its history (a region
                # that reaches a hot page at its edge does not make all of it recent)
                f = min(1.0, r.nr_accesses / checks) if checks else 0.0
                la = f * now + (1.0 - f) * last_access(p.history, r.start, r.end, now - age * aggr)
                history.append((r.start, r.end, la))
                by_key[p.key].append(RegionRecord(
                    pid=p.ref.pid, start=r.start, end=r.end, resident_bytes=res.bytes, shared_bytes=res.shared,
                    nr_accesses=min(r.nr_accesses, checks), nr_checks=checks, age=age,
                    idle_seconds=0.0 if r.nr_accesses > 0 else max(0.0, now - la),
                ))
            p.history, p.history_at = history, now
            pids[p.key].add(p.ref.pid)
            self._checks += checks * len(rs)
        # processes not read this time (just added) still count as monitored
        for p in self._procs.values():
            pids[p.key].add(p.ref.pid)
        if regions:
            self._aggregations += 1
            self._last_aggregation_interval = aggr
        taken = self.wall_clock()
        by_pid = {p.ref.pid: p for p in self._procs.values()}
        read = lambda pid: read_maps(self.pio, self.proc_root, pid, DENIED_HINT)  # noqa: E731
        targets = tuple(
            TargetRecords(
                name=t.spec.name, pids=tuple(sorted(pids[k])),
                regions=tuple(with_frames(by_key[k], lambda pid, addrs: self._frames(by_pid.get(pid), addrs))),
                file_mappings=self._file_maps.of(by_key[k], read, a.update_interval),
                aggregated_at=taken, labels=t.spec.labels,
                errors=self._failures.errors(t.spec.key),
                not_monitored=self._failures.not_monitored(t.spec),
                max_regions=self.region_cap(k),
            )
            for k, t in self._targets.items()
        )
        return Aggregation(backend=NAME, taken_at=taken, sample_interval=a.sample_interval,
                           aggregation_interval=aggr, targets=targets, stats=self.stats())

    def _frames(self, p: "_Proc | None", addrs: list[int]) -> list[int] | None:
        """PFNs at ``addrs`` of ``p``; None for a process dropped since its regions were
        read (its regions are then matched by address)."""
        return None if p is None else frames_at(p.pagemap, addrs, self._zero_pfn)

    # -- the rest ------------------------------------------------------------------------

    def kernel_cpu_seconds(self) -> float:
        """The kdamond threads' CPU since the engine started: the running thread's utime +
        stime from ``/proc/PID/stat``, plus what earlier threads of ours used (a kdamond
        turned off and on again is a new thread)."""
        pid, cpu = self._kdamond_cpu_seen
        now_pid = self._kdamond_pid if self._running else -1
        if now_pid != pid:
            self._kdamond_cpu_done += cpu
            pid, cpu = now_pid, 0.0
        if pid > 0:
            try:
                st = read_stat(self.pio, self.proc_root, pid, DENIED_HINT)
                cpu = max(cpu, st.cpu_seconds)
            except OpsError:
                pass  # it ended: keep its last reading
        self._kdamond_cpu_seen = (pid, cpu)
        return self._kdamond_cpu_done + cpu

    @property
    def kdamond_pid(self) -> int:
        """The kdamond thread's pid while it runs (its CPU time is in /proc/PID/stat)."""
        return self._kdamond_pid if self._running else -1

    def stats(self) -> EngineStats:
        return EngineStats(checks_total=self._checks, aggregations_total=self._aggregations,
                           errors_total=self._failures.totals())

    def close(self) -> None:
        for slot in list(self._procs):
            self._drop(slot)
        if self._counts is not None:
            self._counts.close()
            self._counts = None
        if not self._lost:
            self._release()


def default_attrs() -> MonitoringAttrs:
    """This engine's defaults: the kernel's 5 ms sampling; the aggregation interval is set
    by what reading the regions back costs us (bench/README.md)."""
    return MonitoringAttrs(sample_interval=0.005, aggregation_interval=DEFAULT_AGGREGATION_INTERVAL,
                           update_interval=60.0, min_regions=10, max_regions=100)


DEFAULT_AGGREGATION_INTERVAL = 2.0
