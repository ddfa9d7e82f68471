"""A fake DAMON sysfs tree under a temp dir, with a small fake kernel behind its writes.

The tree is real files (so reads go through the engine's real code); every write goes
through :meth:`FakeDamon.write`, which stores the value and then does what the kernel
does for that file (Linux 6.12, checked in the test guest; see
exporter/engines/damon_sysfs/tree.py): ``nr_*`` files rebuild their children with
defaults, ``state`` commands start, stop, commit and fill ``tried_regions``. Regions come
from :attr:`FakeDamon.regions`: pid -> list of (start, end, nr_accesses, age).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from exporter.engines.damon_sysfs.tree import SysfsError, SysfsIO, U32_MAX, U64_MAX


def _mk(path: Path, files: dict[str, object]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        p = path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"{value}\n")


class FakeDamon(SysfsIO):
    def __init__(self, tmp: Path, *, nr_kdamonds: int = 0, tried_regions: bool = True,
                 target_filter: bool = True, alive=None) -> None:
        self.sys_root = tmp / "sys"
        self.root = self.sys_root / "kernel" / "mm" / "damon"
        self.kdamonds = self.root / "admin" / "kdamonds"
        self.kdamonds.mkdir(parents=True)
        (self.kdamonds / "nr_kdamonds").write_text("0\n")
        self.tried_regions_supported = tried_regions
        self.target_filter_supported = target_filter
        #: pid -> regions the kernel would list for that process' target
        self.regions: dict[int, list[tuple[int, int, int, int]]] = {}
        #: which pids exist (default: /proc says)
        self.alive = alive or (lambda pid: os.path.exists(f"/proc/{pid}"))
        self.writes: list[tuple[str, str]] = []
        self.commands: list[str] = []
        self.next_thread_pid = 1000
        self.busy_updates = 0  # answer this many update commands with EBUSY
        if nr_kdamonds:
            self._set_nr(self.kdamonds, nr_kdamonds, self._new_kdamond)

    # -- the interface the engine uses ----------------------------------------------------

    def write(self, path: str, value: object) -> None:
        p = Path(path)
        text = str(value).strip()
        if not p.is_file():
            # sysfs: no such attribute; creating files is not allowed
            raise SysfsError(f"writing {value!r} to {path}: Permission denied", errno.EACCES)
        self.writes.append((str(p.relative_to(self.root)), text))
        name = p.name
        if name == "state":
            self._state(p.parent, text)
            return
        if name.startswith("nr_") and name != "nr_accesses" and p.parent.name != "nr_regions":
            n = int(text)
            if name == "nr_kdamonds" and self._any_running():
                raise SysfsError(f"writing {value!r} to {path}: Device or resource busy", errno.EBUSY)
            maker = {"nr_kdamonds": self._new_kdamond, "nr_contexts": self._new_context,
                     "nr_targets": self._new_target, "nr_schemes": self._new_scheme,
                     "nr_filters": self._new_filter, "nr_regions": self._new_region}[name]
            self._set_nr(p.parent, n, maker)
        p.write_text(text + "\n")

    # -- kernel behaviour -----------------------------------------------------------------

    def _set_nr(self, d: Path, n: int, maker) -> None:
        for child in d.iterdir():
            if child.is_dir() and child.name.isdigit():
                shutil.rmtree(child)
        for i in range(n):
            maker(d / str(i))
        (d / f"nr_{d.name}").write_text(f"{n}\n")

    def _new_kdamond(self, d: Path) -> None:
        _mk(d, {"state": "off", "pid": -1, "contexts/nr_contexts": 0})

    def _new_context(self, d: Path) -> None:
        _mk(d, {"avail_operations": "vaddr\nfvaddr\npaddr", "operations": "vaddr",
                "monitoring_attrs/intervals/sample_us": 5000, "monitoring_attrs/intervals/aggr_us": 100000,
                "monitoring_attrs/intervals/update_us": 1000000, "monitoring_attrs/nr_regions/min": 10,
                "monitoring_attrs/nr_regions/max": 1000, "targets/nr_targets": 0, "schemes/nr_schemes": 0})

    def _new_target(self, d: Path) -> None:
        _mk(d, {"pid_target": 0, "regions/nr_regions": 0})

    def _new_region(self, d: Path) -> None:
        _mk(d, {"start": 0, "end": 0})

    def _new_scheme(self, d: Path) -> None:
        files: dict[str, object] = {"action": "stat", "filters/nr_filters": 0}
        for name, top in (("sz", U64_MAX), ("nr_accesses", U32_MAX), ("age", U32_MAX)):
            files[f"access_pattern/{name}/min"] = 0
            files[f"access_pattern/{name}/max"] = top
        if self.tried_regions_supported:
            files["tried_regions/total_bytes"] = 0
        _mk(d, files)

    def _new_filter(self, d: Path) -> None:
        files: dict[str, object] = {"type": "anon", "matching": "N", "memcg_path": "", "addr_start": 0, "addr_end": 0}
        if self.target_filter_supported:
            files["damon_target_idx"] = 0
        _mk(d, files)

    def _any_running(self) -> bool:
        return any((k / "state").read_text().strip() == "on" for k in self.kdamonds.iterdir() if k.is_dir())

    def _pids(self, kd: Path) -> list[int]:
        t = kd / "contexts" / "0" / "targets"
        return [int((t / str(i) / "pid_target").read_text()) for i in range(int((t / "nr_targets").read_text()))]

    def _state(self, kd: Path, cmd: str) -> None:
        self.commands.append(cmd)
        state = (kd / "state").read_text().strip()
        running = state == "on"
        err = None
        if cmd == "on":
            if running:
                err = errno.EBUSY
            elif int((kd / "contexts" / "nr_contexts").read_text()) != 1 or not all(map(self.alive, self._pids(kd))):
                err = errno.EINVAL
            else:
                self._set_state(kd, True)
        elif cmd == "off":
            if not running:
                err = errno.EPERM
            else:
                self._set_state(kd, False)
        elif cmd == "commit":
            if not running:
                err = errno.EINVAL
            elif not all(map(self.alive, self._pids(kd))):
                self._set_state(kd, False)  # the kernel terminates the kdamond, and says ok
        elif cmd == "update_schemes_tried_regions":
            if not running:
                err = errno.EINVAL
            elif self.busy_updates:
                self.busy_updates -= 1
                err = errno.EBUSY
            else:
                self._fill_tried_regions(kd)
        else:
            err = errno.EINVAL
        if err is not None:
            raise SysfsError(f"writing {cmd!r} to {kd / 'state'}: {os.strerror(err)}", err)

    def _default_regions(self, pid: int) -> list[tuple[int, int, int, int]]:
        """One cold region over the process' stack, if it is a real live process."""
        try:
            for line in open(f"/proc/{pid}/maps"):
                if line.rstrip().endswith("[stack]"):
                    a, b = line.split()[0].split("-")
                    return [(int(a, 16), int(b, 16), 0, 0)]
        except OSError:
            pass
        return []

    def _set_state(self, kd: Path, on: bool) -> None:
        (kd / "state").write_text("on\n" if on else "off\n")
        if on:
            self.next_thread_pid += 1
        (kd / "pid").write_text(f"{self.next_thread_pid if on else -1}\n")

    def _fill_tried_regions(self, kd: Path) -> None:
        ctx = kd / "contexts" / "0"
        pids = self._pids(kd)
        for i in range(int((ctx / "schemes" / "nr_schemes").read_text())):
            s = ctx / "schemes" / str(i)
            f = s / "filters" / "0"
            idx = int((f / "damon_target_idx").read_text()) if (f / "damon_target_idx").exists() else None
            matching = (f / "matching").read_text().strip() == "Y" if f.exists() else None
            regions = []
            for t, pid in enumerate(pids):
                if idx is not None and (t == idx) == matching:
                    continue  # filtered out
                regions += self.regions[pid] if pid in self.regions else self._default_regions(pid)
            tr = s / "tried_regions"
            for child in tr.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
            for r, (start, end, nr, age) in enumerate(regions):
                _mk(tr / str(r), {"start": start, "end": end, "nr_accesses": nr, "age": age})
            (tr / "total_bytes").write_text(f"{sum(e - s for s, e, _, _ in regions)}\n")

    # -- for tests: what others do ----------------------------------------------------------

    def read_value(self, rel: str) -> str:
        return (self.root / rel).read_text().strip()

    def kill_kdamond(self) -> None:
        """The kdamond stops by itself (all its processes exited)."""
        self._set_state(self.kdamonds / "0", False)

    def restart_kdamond(self) -> None:
        """Someone else turns kdamond 0 off and on again (a new thread)."""
        kd = self.kdamonds / "0"
        self._set_state(kd, False)
        self._set_state(kd, True)
