"""Drive the kernel's own DAMON through its sysfs interface -- inside the test VM only.

Used by bench/kernel_damon_compare.py to run kernel DAMON (``vaddr`` operations) on the same
workload as our user-space monitor. Layout (Documentation/admin-guide/mm/damon/usage.rst,
Linux 6.12)::

    /sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds
      0/state  0/pid
      0/contexts/nr_contexts
        0/operations
        0/monitoring_attrs/intervals/{sample_us,aggr_us,update_us}
        0/monitoring_attrs/nr_regions/{min,max}
        0/targets/nr_targets   0/targets/0/pid_target
        0/schemes/nr_schemes
          0/action  0/access_pattern/{sz,nr_accesses,age}/{min,max}
          0/tried_regions/{total_bytes, N/{start,end,nr_accesses,age}}

The regions are read with a scheme whose action is ``stat`` (it does nothing to memory) and
whose access pattern covers everything: writing ``update_schemes_tried_regions`` to
``state`` makes the kernel list every region the scheme was tried on, i.e. all regions, with
their ``nr_accesses`` (samples that saw an access in the last aggregation) and ``age``
(aggregations since the access frequency last changed).

Every function here writes to the DAMON sysfs tree, so :func:`require_test_vm` must pass
first: the host's /sys/kernel/mm/damon belongs to the machine's own kdamond and must never be
written.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

ADMIN = Path("/sys/kernel/mm/damon/admin")
PAGE_IDLE_BITMAP = "/sys/kernel/mm/page_idle/bitmap"
U64_MAX = str(2**64 - 1)
U32_MAX = str(2**32 - 1)


class NotInTestVM(Exception):
    """Refusal to touch kernel DAMON outside the test VM (the message says why)."""


def require_test_vm(expect_release: str | None) -> None:
    """Refuse unless this is the virtme-ng test guest: the kernel command line is virtme's,
    the kernel has idle page tracking (the hosts here do not), the release is the test
    kernel's (when known), and no kdamond is configured yet (we never take over one)."""
    cmdline = Path("/proc/cmdline").read_text()
    why = []
    if "virtme" not in cmdline:
        why.append("the kernel command line is not a virtme-ng guest's")
    if not os.path.exists(PAGE_IDLE_BITMAP):
        why.append(f"{PAGE_IDLE_BITMAP} does not exist")
    if expect_release and platform.release() != expect_release:
        why.append(f"kernel release is {platform.release()}, the test kernel's is {expect_release}")
    if why:
        raise NotInTestVM(
            "refusing to drive kernel DAMON outside the test VM (" + "; ".join(why) + "); "
            "run bench/kernel_damon_compare.py without --in-guest: it boots the VM"
        )
    nr = ADMIN / "kdamonds" / "nr_kdamonds"
    if not nr.exists():
        raise NotInTestVM(f"{nr} does not exist (kernel built without CONFIG_DAMON_SYSFS)")
    if nr.read_text().strip() != "0":
        raise NotInTestVM(f"{nr} is not 0: a kdamond is already configured here; not touching it")


def _w(path: Path, value: object) -> None:
    try:
        path.write_text(f"{value}\n")
    except OSError as e:
        raise OSError(f"writing {value!r} to {path}: {e.strerror}") from None


def _r(path: Path) -> str:
    return path.read_text().strip()


@dataclass(frozen=True)
class KRegion:
    start: int
    end: int
    nr_accesses: int
    age: int


class Kdamond:
    """One kdamond with one vaddr context on one pid, and an all-covering ``stat`` scheme."""

    def __init__(self, pid: int, *, sample_us: int, aggr_us: int, update_us: int,
                 min_regions: int, max_regions: int) -> None:
        self.kd = ADMIN / "kdamonds" / "0"
        _w(ADMIN / "kdamonds" / "nr_kdamonds", 1)
        try:
            self._configure(pid, sample_us, aggr_us, update_us, min_regions, max_regions)
        except BaseException:
            _w(ADMIN / "kdamonds" / "nr_kdamonds", 0)
            raise

    def _configure(self, pid: int, sample_us: int, aggr_us: int, update_us: int,
                   min_regions: int, max_regions: int) -> None:
        _w(self.kd / "contexts" / "nr_contexts", 1)
        ctx = self.kd / "contexts" / "0"
        _w(ctx / "operations", "vaddr")
        iv = ctx / "monitoring_attrs" / "intervals"
        _w(iv / "sample_us", sample_us)
        _w(iv / "aggr_us", aggr_us)
        _w(iv / "update_us", update_us)
        nr = ctx / "monitoring_attrs" / "nr_regions"
        # raise max before min: min > max is refused
        _w(nr / "max", max_regions)
        _w(nr / "min", min_regions)
        _w(ctx / "targets" / "nr_targets", 1)
        _w(ctx / "targets" / "0" / "pid_target", pid)
        _w(ctx / "schemes" / "nr_schemes", 1)
        sch = ctx / "schemes" / "0"
        _w(sch / "action", "stat")
        ap = sch / "access_pattern"
        for name, top in (("sz", U64_MAX), ("nr_accesses", U32_MAX), ("age", U32_MAX)):
            _w(ap / name / "min", 0)
            _w(ap / name / "max", top)
        self.scheme = sch

    def start(self) -> int:
        """Turn it on; returns the kdamond thread's pid."""
        _w(self.kd / "state", "on")
        return int(_r(self.kd / "pid"))

    def regions(self) -> list[KRegion]:
        """All current regions (the scheme's tried regions after the next aggregation)."""
        _w(self.kd / "state", "update_schemes_tried_regions")
        tr = self.scheme / "tried_regions"
        out = []
        for d in sorted((p for p in tr.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
            out.append(KRegion(int(_r(d / "start")), int(_r(d / "end")),
                               int(_r(d / "nr_accesses")), int(_r(d / "age"))))
        return out

    def stop(self) -> None:
        """Turn it off and remove the configuration, leaving the tree as we found it."""
        try:
            if _r(self.kd / "state") == "on":
                _w(self.kd / "state", "off")
        finally:
            _w(ADMIN / "kdamonds" / "nr_kdamonds", 0)


def thread_cpu_seconds(pid: int) -> float:
    """utime + stime of a task (a kernel thread too) from /proc/PID/stat, in seconds."""
    data = Path(f"/proc/{pid}/stat").read_bytes()
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
