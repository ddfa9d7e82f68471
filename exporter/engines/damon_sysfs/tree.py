"""The kernel's DAMON sysfs tree: file names, the ``state`` commands, and one guard.

Layout (``Documentation/admin-guide/mm/damon/usage.rst``; Linux 6.6 to 6.12 checked)::

    <root>/admin/kdamonds/nr_kdamonds
      0/state 0/pid
      0/contexts/nr_contexts
        0/avail_operations 0/operations
        0/monitoring_attrs/intervals/{sample_us,aggr_us,update_us}
        0/monitoring_attrs/nr_regions/{min,max}
        0/targets/nr_targets   0/targets/N/pid_target
        0/schemes/nr_schemes
          N/action   N/access_pattern/{sz,nr_accesses,age}/{min,max}
          N/filters/nr_filters   N/filters/0/{type,matching,damon_target_idx}
          N/tried_regions/{total_bytes, R/{start,end,nr_accesses,age}}

Kernel behaviour this module relies on (read from ``mm/damon/sysfs*.c`` and checked in the
test guest, Linux 6.12):

- writing ``nr_*`` removes every child directory and makes fresh ones with defaults, so a
  count change means rewriting every child;
- one context per kdamond (``nr_contexts`` other than 1 makes ``on`` fail with EINVAL);
- ``state`` takes ``on``, ``off``, ``commit`` (re-read the files into the running
  context), ``update_schemes_tried_regions`` and others. The commands other than on/off
  are handed to the kdamond thread and the write returns once it handled them: for
  ``update_schemes_tried_regions``, after the schemes were next applied, i.e. at the end
  of the next aggregation (plus up to 100 ms: the writer polls). On a kdamond that is off
  they fail with EINVAL; ``off`` on one that is off fails with EPERM;
- ``commit`` with an input the kernel refuses (a ``pid_target`` whose process is gone)
  returns success and *terminates the kdamond*; the caller must only commit pids that still exist;
- a kdamond stops by itself once every target process has exited;
- ``tried_regions`` appeared in 6.2, the ``target`` DAMOS filter (``damon_target_idx``)
  in 6.6. Linux 6.1 has neither: there the regions cannot be read back at all.

Every write goes through :meth:`SysfsIO.write`, which refuses to write under the real
``/sys/kernel/mm/damon`` when ``DAMON_EXPORTER_NO_REAL_DAMON=1`` is set (the test suite sets
it: on this project's build machines a kdamond belongs to the machine) unless the process
runs in the test VM.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

from exporter.model.errors import OpsError

REAL_DAMON_ROOT = "/sys/kernel/mm/damon"
NO_REAL_ENV = "DAMON_EXPORTER_NO_REAL_DAMON"
TEST_VM_ENV = "DAMON_EXPORTER_IN_TEST_VM"
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
#: EBUSY from a lock someone holds for a moment: this many tries, this far apart
BUSY_RETRIES = 20
BUSY_PAUSE = 0.05


class SysfsError(OpsError):
    """A DAMON sysfs read or write failed; ``errno`` is the kernel's answer."""

    kind = "damon_sysfs"

    def __init__(self, message: str, err: int = 0) -> None:
        super().__init__(message)
        self.errno = err


class RealDamonRefused(SysfsError):
    """A write under the real /sys/kernel/mm/damon where the environment forbids it."""

    kind = "damon_sysfs"


def in_test_vm() -> bool:
    """The virtme-ng test guest: its harness exports the variable, and virtme boots the
    kernel with its own command line."""
    if os.environ.get(TEST_VM_ENV) != "1":
        return False
    try:
        return "virtme" in Path("/proc/cmdline").read_text()
    except OSError:
        return False


def is_real_damon_path(path: str) -> bool:
    real = os.path.realpath(REAL_DAMON_ROOT)
    p = os.path.realpath(path)
    return p == real or p.startswith(real + "/")


def check_write_allowed(path: str) -> None:
    """Raise RealDamonRefused for a write under the real DAMON tree where it is forbidden."""
    if os.environ.get(NO_REAL_ENV) == "1" and is_real_damon_path(path) and not in_test_vm():
        raise RealDamonRefused(
            f"refusing to write {path}: {NO_REAL_ENV}=1 forbids writing the real DAMON sysfs "
            "tree outside the test VM", errno.EPERM
        )


class SysfsIO:
    """The few file operations on the tree. Tests substitute a subclass whose writes are
    interpreted by a fake kernel; this one is the real thing (one syscall per step, no
    buffering: sysfs files are read and written whole)."""

    def read(self, path: str) -> str:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise SysfsError(f"reading {path}: {e.strerror}", e.errno or 0) from None
        try:
            return os.read(fd, 4096).decode(errors="replace").strip()
        except OSError as e:
            raise SysfsError(f"reading {path}: {e.strerror}", e.errno or 0) from None
        finally:
            os.close(fd)

    def write(self, path: str, value: object) -> None:
        check_write_allowed(path)
        data = f"{value}\n".encode()
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError as e:
            raise SysfsError(f"writing {value!r} to {path}: {e.strerror}", e.errno or 0) from None
        try:
            os.write(fd, data)
        except OSError as e:
            raise SysfsError(f"writing {value!r} to {path}: {e.strerror}", e.errno or 0) from None
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except OSError as e:
            raise SysfsError(f"listing {path}: {e.strerror}", e.errno or 0) from None

    def writable(self, path: str) -> bool:
        return os.access(path, os.W_OK)


@dataclass(frozen=True, slots=True)
class TriedRegion:
    start: int
    end: int
    nr_accesses: int
    age: int


@dataclass(frozen=True)
class ContextAttrs:
    """What one context is given, in the kernel's units."""

    sample_us: int
    aggr_us: int
    update_us: int
    min_regions: int
    max_regions: int


class KdamondTree:
    """Paths and operations of kdamond 0 of one DAMON sysfs root, with one context whose
    scheme ``i`` is a ``stat`` scheme over everything, filtered to target ``i``."""

    def __init__(self, root: str, io: SysfsIO) -> None:
        self.root = root.rstrip("/") or "/"
        self.io = io
        self.kdamonds = f"{self.root}/admin/kdamonds"
        self.nr_kdamonds = f"{self.kdamonds}/nr_kdamonds"
        self.kd = f"{self.kdamonds}/0"
        self.state_file = f"{self.kd}/state"
        self.ctx = f"{self.kd}/contexts/0"
        # what was last written to the count files (counts reset children; see module doc)
        self._written_attrs: ContextAttrs | None = None

    # -- reading -------------------------------------------------------------------------

    def _busy_retry(self, fn, *args):  # type: ignore[no-untyped-def]
        """``state`` and ``pid`` take the DAMON sysfs lock with a trylock and answer EBUSY
        while anyone holds it (another reader, a command in progress): try again briefly."""
        for _ in range(BUSY_RETRIES):
            try:
                return fn(*args)
            except SysfsError as e:
                if e.errno != errno.EBUSY:
                    raise
                time.sleep(BUSY_PAUSE)
        return fn(*args)

    def read_nr_kdamonds(self) -> int:
        return int(self._busy_retry(self.io.read, self.nr_kdamonds))

    def state(self) -> str:
        return self._busy_retry(self.io.read, self.state_file)

    def pid(self) -> int:
        return int(self._busy_retry(self.io.read, f"{self.kd}/pid"))

    def tried_regions(self, scheme: int) -> list[TriedRegion]:
        """The regions scheme ``scheme`` was tried on at the last update, by address."""
        d = f"{self.ctx}/schemes/{scheme}/tried_regions"
        read = self.io.read
        out = []
        for name in self.io.listdir(d):
            if not name.isdigit():
                continue
            r = f"{d}/{name}"
            out.append(TriedRegion(int(read(f"{r}/start")), int(read(f"{r}/end")),
                                   int(read(f"{r}/nr_accesses")), int(read(f"{r}/age"))))
        out.sort(key=lambda t: t.start)
        return out

    # -- writing -------------------------------------------------------------------------

    def command(self, cmd: str) -> None:
        self.io.write(self.state_file, cmd)

    def create(self) -> None:
        """nr_kdamonds 1, one context, vaddr: the skeleton, with feature checks."""
        self.io.write(self.nr_kdamonds, 1)
        self.io.write(f"{self.kd}/contexts/nr_contexts", 1)
        avail = f"{self.ctx}/avail_operations"
        if self.io.exists(avail) and "vaddr" not in self.io.read(avail).split():
            raise SysfsError(f"{avail} does not offer vaddr (kernel built without CONFIG_DAMON_VADDR)")
        self.io.write(f"{self.ctx}/operations", "vaddr")

    def set_attrs(self, a: ContextAttrs) -> None:
        iv = f"{self.ctx}/monitoring_attrs/intervals"
        self.io.write(f"{iv}/sample_us", a.sample_us)
        self.io.write(f"{iv}/aggr_us", a.aggr_us)
        self.io.write(f"{iv}/update_us", a.update_us)
        nr = f"{self.ctx}/monitoring_attrs/nr_regions"
        old_max = self._written_attrs.max_regions if self._written_attrs else None
        if old_max is not None and a.min_regions <= old_max:
            self.io.write(f"{nr}/min", a.min_regions)
            self.io.write(f"{nr}/max", a.max_regions)
        else:
            self.io.write(f"{nr}/max", a.max_regions)
            self.io.write(f"{nr}/min", a.min_regions)
        self._written_attrs = a

    def set_targets(self, pids: list[int], old_pids: list[int] | None) -> None:
        """Targets and their schemes. Same count: only changed pids are rewritten; another
        count: everything (the kernel made fresh directories)."""
        tdir = f"{self.ctx}/targets"
        if old_pids is not None and len(old_pids) == len(pids):
            for i, (old, new) in enumerate(zip(old_pids, pids)):
                if old != new:
                    self.io.write(f"{tdir}/{i}/pid_target", new)
            return
        self.io.write(f"{tdir}/nr_targets", len(pids))
        for i, pid in enumerate(pids):
            self.io.write(f"{tdir}/{i}/pid_target", pid)
        sdir = f"{self.ctx}/schemes"
        self.io.write(f"{sdir}/nr_schemes", len(pids))
        for i in range(len(pids)):
            self._write_scheme(f"{sdir}/{i}", i)

    def _write_scheme(self, s: str, target_idx: int) -> None:
        w = self.io.write
        w(f"{s}/action", "stat")
        for name, top in (("sz", U64_MAX), ("nr_accesses", U32_MAX), ("age", U32_MAX)):
            w(f"{s}/access_pattern/{name}/min", 0)
            w(f"{s}/access_pattern/{name}/max", top)
        if not self.io.exists(f"{s}/tried_regions"):
            raise SysfsError(f"{s}/tried_regions does not exist (Linux older than 6.2: regions cannot be read back)")
        w(f"{s}/filters/nr_filters", 1)
        f = f"{s}/filters/0"
        w(f"{f}/type", "target")
        if not self.io.exists(f"{f}/damon_target_idx"):
            raise SysfsError(
                f"{f}/damon_target_idx does not exist (Linux older than 6.6: no DAMOS target "
                "filter to attribute regions to processes)"
            )
        w(f"{f}/damon_target_idx", target_idx)
        # matching N: the filter excludes memory *not* of target ``target_idx``
        w(f"{f}/matching", "N")

    def turn_off_and_remove(self) -> None:
        """Off (if on) and nr_kdamonds 0: the tree as an unused kernel has it."""
        try:
            if self.io.exists(self.state_file) and self.state() == "on":
                self._busy_retry(self.command, "off")
        finally:
            if self.read_nr_kdamonds() != 0:  # nothing to write where nothing was created
                self._busy_retry(self.io.write, self.nr_kdamonds, 0)
        self._written_attrs = None
