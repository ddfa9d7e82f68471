"""Who owns the kernel's kdamond: the marker this exporter leaves, reclaiming a dead exporter's leftover, and whether kernel DAMON is free here.

kdamonds are shared by the whole machine. The engine starts only when ``nr_kdamonds`` is 0
(else it refuses and ``auto`` falls back), then owns kdamond 0: a :class:`Marker` is written
before it is created and removed once ``nr_kdamonds`` is back to 0. After a crash (SIGKILL,
OOM kill) the marker lets the next exporter reclaim the leftover: same boot, the recorded
exporter process gone, ``nr_kdamonds`` 1, and kdamond 0 either running with the thread pid
we recorded or off (:func:`reclaimable`). Nothing here writes to the DAMON tree.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import dataclass

from exporter.engines.damon_sysfs.tree import (
    KdamondTree,
    SysfsError,
    SysfsIO,
)
from exporter.model.errors import OpsError
from exporter.model.process import ProcessRef
from exporter.procfs.io import PosixIO
from exporter.procfs.parsers import check_same_process

NAME = "damon_sysfs"
#: default marker directory: /run is per boot, like kdamonds (see Marker)
DEFAULT_STATE_DIR = "/run/damon-exporter"
STATE_DIR_ENV = "DAMON_EXPORTER_STATE_DIR"
MARKER_NAME = "damon_sysfs.json"
MIN_KERNEL = (6, 6)
DENIED_HINT = "damon_sysfs reads /proc/PID/pagemap (root, or ptrace access to the process)"


def kernel_version(release: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m[1]), int(m[2])) if m else None


def damon_root(sys_root: str) -> str:
    return f"{sys_root.rstrip('/')}/kernel/mm/damon"


# -- the ownership marker ------------------------------------------------------------------


def boot_id(proc_root: str) -> str:
    try:
        with open(f"{proc_root}/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(proc_root: str, pid: int) -> int | None:
    """The start time of ``pid``, or None if there is no such process."""
    try:
        return check_same_process(PosixIO(), proc_root, ProcessRef(pid), DENIED_HINT).start_time
    except OpsError:
        return None


@dataclass
class Marker:
    """What this exporter created, kept in ``<state dir>/damon_sysfs.json``.

    Written *before* ``nr_kdamonds`` is set to 1 and updated with the kdamond thread's pid
    each time it is turned on; removed once ``nr_kdamonds`` is back to 0. A later exporter
    may reclaim the kdamond only if the marker is of this boot and this tree, the process
    that wrote it is gone, and the kdamond is still as we left it (see :func:`reclaimable`).
    """

    boot_id: str
    root: str
    exporter_pid: int
    exporter_start_time: int
    kdamond_pid: int = -1

    @staticmethod
    def path(state_dir: str) -> str:
        return os.path.join(state_dir, MARKER_NAME)

    @classmethod
    def load(cls, state_dir: str) -> "Marker | None":
        try:
            with open(cls.path(state_dir)) as f:
                d = json.load(f)
            return cls(str(d["boot_id"]), str(d["root"]), int(d["exporter_pid"]),
                       int(d["exporter_start_time"]), int(d.get("kdamond_pid", -1)))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        tmp = self.path(state_dir) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.__dict__, f)
        os.replace(tmp, self.path(state_dir))

    @classmethod
    def remove(cls, state_dir: str) -> None:
        try:
            os.unlink(cls.path(state_dir))
        except FileNotFoundError:
            pass


def reclaimable(tree: KdamondTree, state_dir: str, proc_root: str) -> tuple[bool, str]:
    """Whether the kdamond configured in ``tree`` is a leftover of a dead exporter (read-only)."""
    m = Marker.load(state_dir)
    if m is None:
        return False, "no marker of a previous damon-exporter"
    if m.boot_id != boot_id(proc_root) or m.root != os.path.realpath(tree.root):
        return False, f"the marker {Marker.path(state_dir)} is of another boot or tree"
    if _start_time(proc_root, m.exporter_pid) == m.exporter_start_time:
        return False, f"it is in use by damon-exporter pid {m.exporter_pid}"
    try:
        if tree.read_nr_kdamonds() != 1:
            return False, "it has more kdamonds than damon-exporter creates"
        state = tree.state()
        if state == "on" and tree.pid() != m.kdamond_pid:
            return False, f"kdamond 0 runs as pid {tree.pid()}, not the pid {m.kdamond_pid} damon-exporter recorded"
    except (SysfsError, ValueError) as e:
        return False, f"cannot read it: {e}"
    return True, f"a leftover of damon-exporter pid {m.exporter_pid}, which exited (marker {Marker.path(state_dir)})"


# -- availability --------------------------------------------------------------------------


def available(
    *, proc_root: str = "/proc", sys_root: str = "/sys", io: SysfsIO | None = None,
    state_dir: str | None = None, release: str | None = None,
) -> tuple[bool, str]:
    """Whether kernel DAMON is usable and free here, and why (never writes anything)."""
    io = io or SysfsIO()
    state_dir = state_dir or os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR)
    tree = KdamondTree(damon_root(sys_root), io)
    nr = tree.nr_kdamonds
    if not io.exists(nr):
        return False, f"{nr} does not exist (kernel built without CONFIG_DAMON_SYSFS)"
    release = release or platform.release()
    v = kernel_version(release)
    if v is not None and v < MIN_KERNEL:
        return False, (
            f"Linux {release} is older than 6.6: its DAMON sysfs has no target filter to "
            "attribute regions to processes (6.1 cannot read regions back at all)"
        )
    if not io.writable(nr):
        return False, f"{nr} is not writable (needs root and /sys/kernel/mm/damon mounted read-write)"
    try:
        n = tree.read_nr_kdamonds()
    except (SysfsError, ValueError) as e:
        return False, f"cannot read {nr}: {e}"
    if n == 0:
        return True, f"{nr} is 0: kernel DAMON is free"
    ok, why = reclaimable(tree, state_dir, proc_root)
    if ok:
        return True, f"{nr} is {n}, {why}: reclaiming it"
    return False, f"{nr} is {n}: kernel DAMON is in use by someone else ({why}); it is only used when no kdamond is configured"
