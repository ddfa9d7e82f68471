"""Whether a process ran at all between two reads: the CPU time of each of its threads.

A page's accessed bit is set by the MMU when one of the process' threads touches it through
the page tables, or by the kernel copying into the process' memory on its behalf (a read(2)
into its buffer: that runs on one of its threads too). So a process none of whose threads
ran between two moments touched none of its private memory in between. The Referenced
counts of clear_refs cannot tell a load that ended from a steady one (both leave them flat
until the next clear); this can, for a process that stops running (blocked, stopped,
frozen by its cgroup), and proves its private memory idle from the first read that saw it
stop.

The proof needs every thread's run time to the nanosecond (``/proc/PID/task/TID/schedstat``,
first field: ``sum_exec_runtime``). The clock ticks of ``/proc/PID/stat`` are not enough: a
process that ran for less than a tick (10 ms, time to touch a hundred MiB) may not move them.
A thread that appeared or vanished between two reads changes the set of thread ids, and a
thread cannot start without another one running: two equal snapshots prove that no thread
ran in between. A process with more than :data:`MAX_THREADS` threads is not read (the cost is
one read per thread): no proof, the figures keep their bounds.
"""

from __future__ import annotations

import itertools
import os

from exporter.procfs.io import PosixIO

#: threads read per process at most, per read (one small /proc read each)
MAX_THREADS = 256

#: what two reads compare: (thread id, nanoseconds it ran) for every thread, sorted
Activity = tuple[tuple[int, int], ...]


def thread_runtimes(io: PosixIO, proc_root: str, pid: int, max_threads: int = MAX_THREADS) -> Activity | None:
    """Every thread of ``pid`` with the nanoseconds it has run, or None where that cannot be
    read whole (too many threads, no schedstat in this kernel, a thread that vanished
    mid-read, the process gone): None never proves anything."""
    try:  # listed only up to one past the bound: a process with 100,000 threads costs 257 names
        with os.scandir(f"{proc_root}/{pid}/task") as entries:
            names = [e.name for e in itertools.islice(entries, max_threads + 1)]
    except OSError:
        return None
    if not names or len(names) > max_threads:
        return None
    out = []
    for name in names:
        if not name.isdigit():
            return None
        try:
            fields = io.read_file(f"{proc_root}/{pid}/task/{name}/schedstat", limit=128).split()
            out.append((int(name), int(fields[0])))
        except (OSError, ValueError, IndexError):
            return None
    return tuple(sorted(out))
