"""clear_refs: what clearing accessed bits costs reclaim, by clear period, against no clears.

    sudo python bench/clear_refs_reclaim_bench.py              # ~10 minutes: 4 periods x 2 min
    sudo python bench/clear_refs_reclaim_bench.py --seconds 30 # a quick look

Every clear erases each page's accessed bit, which reclaim reads to keep pages in use in
memory. A page used more rarely than reclaim scans it but more often than it is cleared
keeps its bit set; clear it, and to reclaim the page looks unused since the clear. This bench
measures that cost as refaults (major faults of the processes using the pages), in a memory
cgroup under constant pressure, at the clear periods that matter:

- **none**: the baseline, measured in the same run;
- **60 s**, **30 s**, **10 s**: 30 s is half the default window, the period a working set
  that follows a load's end within a window would need (docs/freshness.md).

The engine's own period at the defaults (``max(working_set_window, 2 * cold_age)``, 240 s
stretched by up to a half) is longer than a row can be; what a clear costs does not depend
on the period once the period is longer than the readers' (each clear costs the refaults of
the pages reclaim reaches before their next use), so the last column gives the refaults per
clear over the baseline, and a period ``P`` costs that times ``60 / P`` per minute.

The cgroup (a child of this process' own memory cgroup, v1 or v2) holds three readers of a
file mapping (``tests/workloads/filetouch.c``), 64 MiB each, reading every page every 0.2 s,
5 s and 20 s, and a streamer reading a 1 GiB file over and over (page cache used once: what
reclaim should take). Its limit leaves the streamer less room than the readers' pages, so
reclaim runs all the time. Anonymous memory is not used: without swap, reclaim cannot take
it and clearing its bits costs nothing. Columns: major faults per minute of each reader
(each one a page of memory in use read back from disk), and the cgroup's file refaults per
minute (the streamer's included, which is the same in every row when nothing else changes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from exporter.discovery.cgroups import V1_MEMORY, V2, hierarchies, parse_proc_cgroup  # noqa: E402
from tests.support.workloads import build_workload  # noqa: E402

MiB = 1 << 20
READER_MIB = 64
READER_PERIODS_MS = (200, 5000, 20000)
STREAM_MIB = 1024
#: the cgroup's limit: the readers' pages and a little room for the stream
LIMIT_MIB = READER_MIB * len(READER_PERIODS_MS) + 32
PERIODS: tuple[float | None, ...] = (None, 60.0, 30.0, 10.0)
WARM_UP = 20.0


def own_memory_cgroup() -> tuple[Path, str]:
    """This process' memory cgroup directory, and its version ("v1" or "v2"), found as
    discovery finds them: the v1 memory hierarchy where there is one, else cgroup2 with its
    memory controller."""
    own = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    for h in reversed(hierarchies("/sys/fs/cgroup")):  # the v1 memory hierarchy first
        if h.kind == V1_MEMORY and own.memory is not None:
            return Path(h.root) / own.memory.lstrip("/"), "v1"
        controllers = Path(h.root) / "cgroup.controllers"
        if h.kind == V2 and own.v2 is not None and "memory" in controllers.read_text().split():
            return Path(h.root) / own.v2.lstrip("/"), "v2"
    raise SystemExit("no memory cgroup controller found (v1 memory hierarchy or cgroup2 with memory)")


class Cgroup:
    """A child memory cgroup with a limit, removed on close."""

    def __init__(self, parent: Path, version: str, limit: int) -> None:
        self.path, self.version = parent / f"dxreclaim-{os.getpid()}", version
        self.path.mkdir()
        if version == "v1":
            (self.path / "memory.limit_in_bytes").write_text(str(limit))
        else:
            (self.path / "memory.max").write_text(str(limit))

    def enter(self) -> None:
        """Move the calling process in (a child's preexec_fn, before it execs)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def refaults(self) -> int:
        for line in (self.path / "memory.stat").read_text().splitlines():
            key, value = line.split()
            if key == "workingset_refault_file" or (self.version == "v2" and key == "workingset_refault"):
                return int(value)
        return 0

    def close(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def majflt(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2:].split()[9])


def make_file(path: Path, mib: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


STREAMER = "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nwhile True:\n    if not os.read(fd,1<<20): os.lseek(fd,0,0)\n"


def run(period: float | None, seconds: float, binary: str, hot: Path, stream: Path, parent: Path, version: str) -> dict:
    for f in (hot, stream):
        drop_cache(f)
    cg = Cgroup(parent, version, LIMIT_MIB * MiB)
    procs: list[subprocess.Popen] = []
    try:
        readers = []
        for i, ms in enumerate(READER_PERIODS_MS):
            p = subprocess.Popen([binary, str(hot), str(i * READER_MIB), str(READER_MIB), str(ms)], stdout=subprocess.PIPE,
                                 text=True, preexec_fn=cg.enter)
            procs.append(p)
            assert p.stdout.readline().startswith("ready"), f"filetouch exited {p.poll()}"
            readers.append(p)
        procs.append(subprocess.Popen([sys.executable, "-c", STREAMER, str(stream)], preexec_fn=cg.enter))
        time.sleep(WARM_UP)
        f0, r0, t0 = [majflt(p.pid) for p in readers], cg.refaults(), time.monotonic()
        clears, next_clear = 0, t0 + (period or 0)
        while time.monotonic() - t0 < seconds:
            if period is not None and time.monotonic() >= next_clear:
                for p in readers:
                    Path(f"/proc/{p.pid}/clear_refs").write_text("1")
                clears += 1
                next_clear += period
            time.sleep(0.05)
        minutes = (time.monotonic() - t0) / 60
        f1, r1 = [majflt(p.pid) for p in readers], cg.refaults()
        return {"period": period, "clears": clears, "minutes": minutes, "faults": [(b - a) / minutes for a, b in zip(f0, f1)],
                "refaults": (r1 - r0) / minutes}
    finally:
        for p in procs:
            p.kill()
            p.wait()
        cg.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="measured seconds per clear period (default 120)")
    ap.add_argument("--dir", default="/var/tmp", help="a disk-backed directory for the files (not tmpfs: no swap)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: it creates a memory cgroup and writes clear_refs")
    parent, version = own_memory_cgroup()
    with tempfile.TemporaryDirectory(prefix="dxreclaim", dir=args.dir) as tmp:
        binary = build_workload("filetouch.c", tmp)
        hot, stream = Path(tmp) / "hot.dat", Path(tmp) / "stream.dat"
        make_file(hot, READER_MIB * len(READER_PERIODS_MS))
        make_file(stream, STREAM_MIB)
        rows = [run(p, args.seconds, binary, hot, stream, parent, version) for p in PERIODS]
    base = rows[0]
    names = " | ".join(f"reader every {ms / 1000:g} s" for ms in READER_PERIODS_MS)
    print(f"\ncgroup {version}, limit {LIMIT_MIB} MiB; readers {READER_MIB} MiB each; {args.seconds:g} s per row; "
          "major faults per minute (x the no-clear row)\n")
    print(f"| clear period | clears | {names} | cgroup file refaults/min | readers' faults per clear over none |")
    print("|---" * (4 + len(READER_PERIODS_MS)) + "|")
    for r in rows:
        cells = " | ".join(f"{f:,.0f} ({f / b:.1f}x)" if b else f"{f:,.0f}" for f, b in zip(r["faults"], base["faults"]))
        label = "none" if r["period"] is None else f"{r['period']:g} s"
        per_clear = (sum(r["faults"]) - sum(base["faults"])) * r["minutes"] / r["clears"] if r["clears"] else 0.0
        print(f"| {label} | {r['clears']} | {cells} | {r['refaults']:,.0f} | {'-' if not r['clears'] else f'{per_clear:,.0f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
