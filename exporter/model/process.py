"""Which process: identity that survives pid reuse, and the kernel's facts about names and states."""

from __future__ import annotations

from dataclasses import dataclass

#: the kernel keeps 15 bytes of a command name (TASK_COMM_LEN 16 with the NUL)
COMM_LEN = 15

#: ``/proc/PID/stat`` states of a process that has no address space left to watch:
#: zombie, dead (``X``, and ``x`` of old kernels)
EXITED_STATES: frozenset[str] = frozenset({"Z", "X", "x"})


@dataclass(frozen=True, order=True)
class ProcessRef:
    """A process, keyed by pid *and* start time, because pids are reused.

    ``start_time`` is field 22 of ``/proc/PID/stat`` (clock ticks since boot); 0 means
    "unknown" and disables the reuse check (simulations, tests).

    ``image`` names the program image the process ran when it was matched (see
    :func:`exporter.procfs.parsers.image_of`): exec keeps the pid and the start time, so
    without it a process that exec'ed another program after discovery would still pass for
    the one matched. 0 means "unknown" and disables the exec check.
    """

    pid: int
    start_time: int = 0
    image: int = 0
