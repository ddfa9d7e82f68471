"""Parsers of /proc/PID/stat, maps and smaps, and the readers that open them.

Kernel facts used here (fs/proc/array.c, fs/proc/task_mmu.c): ``/proc/PID/stat`` field 22
is the start time in clock ticks since boot, field 24 the resident set in pages; field 2
(comm) is in parentheses and may itself contain spaces and parentheses, so we split after
the *last* ``)``.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Iterable
from dataclasses import dataclass, replace

from exporter.model.attrs import PAGE_SIZE  # the unit of the resident set in /proc/PID/stat
from exporter.model.errors import ImageChanged, OpsError, ProcessGone
from exporter.model.process import EXITED_STATES, ProcessRef
from exporter.procfs.io import PosixIO, decode_name, ops_error

#: clock ticks per second of the times in /proc/PID/stat
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: user space ends here on x86-64 (4-level paging; 5-level still starts mmap below it)
USER_ADDR_LIMIT = 0x800000000000


# -- /proc/PID/stat --------------------------------------------------------------------------


@dataclass(frozen=True)
class StatInfo:
    comm: str
    state: str
    start_time: int  # field 22, clock ticks after boot: (pid, start_time) names one process
    ppid: int = 0
    flags: int = 0  # PF_* (PF_KTHREAD marks kernel threads)
    utime: int = 0  # fields 14 and 15, clock ticks
    stime: int = 0
    #: field 24: resident pages (anonymous, file and shmem; the kernel's per-mm counters, so
    #: a page shared with another process counts in both)
    rss_pages: int = 0
    #: fields 26-28 and 45-51: where exec laid out code, data, heap, stack, arguments and
    #: environment of the address space the process has now (zeros when the reader may
    #: not look at it; empty on kernels before 3.5); see :func:`image_of`
    layout: tuple[int, ...] = ()

    @property
    def cpu_seconds(self) -> float:
        return (self.utime + self.stime) / CLOCK_TICKS

    @property
    def rss_bytes(self) -> int:
        return self.rss_pages * PAGE_SIZE


def parse_stat(data: bytes) -> StatInfo:
    """Parse /proc/PID/stat. comm (field 2) may contain spaces and ')' so we cut at the last
    ')'; after the cut, field N is at index N - 3 (state 3, ppid 4, flags 9, start time 22,
    rss 24; a line cut short before rss, as old kernels never write, reads as rss 0).
    Shared by the backends and by target discovery."""
    lpar = data.find(b"(")
    rpar = data.rfind(b")")
    if lpar < 0 or rpar < lpar:
        raise ValueError(f"malformed stat line: {data[:80]!r}")
    rest = data[rpar + 1 :].split()
    if len(rest) < 20:
        raise ValueError(f"stat line has {len(rest) + 2} fields, expected at least 22")
    return StatInfo(
        comm=decode_name(data[lpar + 1 : rpar]),
        state=rest[0].decode(errors="replace"),
        start_time=int(rest[19]),
        ppid=int(rest[1]),
        flags=int(rest[6]),
        utime=int(rest[11]),
        stime=int(rest[12]),
        rss_pages=max(0, int(rest[21])) if len(rest) > 21 else 0,
        layout=tuple(int(rest[i]) for i in _LAYOUT_INDEXES) if len(rest) > _LAYOUT_INDEXES[-1] else (),
    )


#: indexes after the comm cut of start_code, end_code, start_stack (26-28) and start_data,
#: end_data, start_brk, arg_start, arg_end, env_start, env_end (45-51)
_LAYOUT_INDEXES = (23, 24, 25, 42, 43, 44, 45, 46, 47, 48)


def image_of(st: StatInfo) -> int:
    """A 64-bit name of the program image the process runs: its comm and the layout of its
    address space, from one read of ``/proc/PID/stat``; 0 ("unknown": no check) only for a
    stat line without the layout fields (kernels before 3.5, hand-written test trees).

    Exec keeps the pid and the start time but builds a new address space: with address
    space randomisation (the default) the stack, heap and argument addresses of the new one
    differ from the old with near certainty, and the kernel keeps that randomisation for a
    setuid, setgid or file-capability program even when the caller asked for none
    (``PER_CLEAR_ON_SETID``); a different program also differs in its code and data bounds;
    exec sets comm to the new program's name. A process changes none of these fields
    without exec except comm (``prctl(PR_SET_NAME)``), which only makes it be matched again.
    Because a task never returns to an address space it left, a check that finds the same
    image *after* an operation proves the operation met the image that was matched."""
    if not st.layout:
        return 0
    digest = hashlib.blake2b(st.comm.encode("utf-8", "surrogatepass") + b"\0" + repr(st.layout).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


def read_stat(io: PosixIO, proc_root: str, pid: int, denied_hint: str) -> StatInfo:
    path = f"{proc_root}/{pid}/stat"
    try:
        data = io.read_file(path)
    except OSError as e:
        raise ops_error(e, pid, path, denied_hint) from None
    if not data:
        raise ProcessGone(f"process {pid} exited")
    try:
        return parse_stat(data)
    except ValueError as e:
        raise OpsError(f"{path}: {e}") from None


#: threads looked at for one still running when a thread-group leader has exited (bounds the
#: work a process with thousands of threads can cause; the first such thread is almost always
#: next)
MAX_THREADS_SCANNED = 64


def live_thread(io: PosixIO, proc_root: str, pid: int) -> int | None:
    """A thread of process ``pid`` other than its leader that has not exited, or None. A
    leader that calls ``pthread_exit`` becomes a zombie while its other threads run on in
    the same address space; its own ``/proc/PID`` files then show no memory, a remaining
    thread's show all of it."""
    try:
        names = os.listdir(f"{proc_root}/{pid}/task")
    except OSError:
        return None
    for name in sorted(names)[:MAX_THREADS_SCANNED]:
        if not name.isdigit() or int(name) == pid:
            continue
        try:
            st = parse_stat(io.read_file(f"{proc_root}/{pid}/task/{name}/stat"))
        except (OSError, ValueError):
            continue
        if st.state not in EXITED_STATES:
            return int(name)
    return None


def process_image(io: PosixIO, proc_root: str, pid: int, st: StatInfo) -> int:
    """:func:`image_of` the process whose leader's stat is ``st``. A leader that exited while
    its threads run on shows no address space, so the layout is then a live thread's (the
    threads share one), under the leader's comm: the image stays the same across that exit."""
    if st.state in EXITED_STATES:
        tid = live_thread(io, proc_root, pid)
        if tid is not None:
            try:
                thread = parse_stat(io.read_file(f"{proc_root}/{pid}/task/{tid}/stat"))
            except (OSError, ValueError):
                return image_of(st)
            return image_of(replace(st, layout=thread.layout))
    return image_of(st)


def alive(io: PosixIO, proc_root: str, pid: int, st: StatInfo) -> bool:
    """Whether the process whose leader's stat is ``st`` still runs: not exited, or its
    leader exited with other threads still running."""
    return st.state not in EXITED_STATES or live_thread(io, proc_root, pid) is not None


def mm_dir(io: PosixIO, proc_root: str, pid: int) -> str:
    """The /proc directory whose files (maps, smaps, pagemap, clear_refs) show ``pid``'s
    address space: ``/proc/PID``, or ``/proc/PID/task/TID`` of a remaining thread where the
    leader has exited (see :func:`live_thread`)."""
    try:
        st = parse_stat(io.read_file(f"{proc_root}/{pid}/stat"))
    except (OSError, ValueError):
        return f"{proc_root}/{pid}"
    if st.state in EXITED_STATES:
        tid = live_thread(io, proc_root, pid)
        if tid is not None:
            return f"{proc_root}/{pid}/task/{tid}"
    return f"{proc_root}/{pid}"


def check_same_process(io: PosixIO, proc_root: str, proc: ProcessRef, denied_hint: str) -> StatInfo:
    """Raise ProcessGone if ``proc`` exited, is a zombie with no remaining thread, or its pid now
    names another process (start time differs; only checked when the ref carries one), and
    ImageChanged if it exec'ed since it was matched (only when the ref carries an image)."""
    st = read_stat(io, proc_root, proc.pid, denied_hint)
    if not alive(io, proc_root, proc.pid, st):
        raise ProcessGone(f"process {proc.pid} exited")
    if proc.start_time and st.start_time != proc.start_time:
        raise ProcessGone(f"process {proc.pid} exited (pid reused)")
    if proc.image and process_image(io, proc_root, proc.pid, st) != proc.image:
        raise ImageChanged(f"process {proc.pid} exec'ed another program since it was matched (now {st.comm!r})")
    return st


# -- /proc/PID/maps --------------------------------------------------------------------------

# start-end perms: the rest of the line is skipped by the regex engine's line anchor
_MAPS_RE = re.compile(rb"^([0-9a-f]+)-([0-9a-f]+) (....)", re.M)


def parse_maps(data: bytes, *, skip_prot_none: bool = False) -> list[tuple[int, int]]:
    """User mappings of a /proc/PID/maps text as sorted (start, end) pairs, in one pass.

    Drops ``[vsyscall]`` and anything at or above :data:`USER_ADDR_LIMIT` (kernel-owned).
    ``skip_prot_none`` also drops ``---p``/``---s`` mappings (guard pages, reserved address
    space): nothing can access them. The kernel emits VMAs in address order, so we only sort
    when that is not so (a fake file).
    """
    out: list[tuple[int, int]] = []
    last = -1
    ordered = True
    limit = USER_ADDR_LIMIT
    for m in _MAPS_RE.finditer(data):
        start = int(m[1], 16)
        if start >= limit:
            continue
        if skip_prot_none and m[3][:3] == b"---":
            continue
        end = int(m[2], 16)
        if start < last:
            ordered = False
        last = start
        out.append((start, end))
    if not ordered:
        out.sort()
    return out


#: start-end perms offset major:minor inode
_FILE_MAPS_RE = re.compile(rb"^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) ([0-9]+)", re.M)


def parse_file_maps(data: bytes, at_most: int | None = None) -> list[tuple[int, int, int, int, int]]:
    """The file-backed user mappings of a /proc/PID/maps text as ``(start, end, device,
    inode, offset)``, the device as the kernel's ``MKDEV(major, minor)``. Shared anonymous
    memory and SysV segments are files of shmem here (an inode of their own); private
    anonymous mappings (inode 0) are left out. With ``at_most``, parsing stops at
    ``at_most + 1`` mappings: a caller that refuses more need not build the rest."""
    out: list[tuple[int, int, int, int, int]] = []
    limit = USER_ADDR_LIMIT
    for m in _FILE_MAPS_RE.finditer(data):
        inode = int(m[6])
        start = int(m[1], 16)
        if inode == 0 or start >= limit:
            continue
        out.append((start, int(m[2], 16), (int(m[4], 16) << 20) | int(m[5], 16), inode, int(m[3], 16)))
        if at_most is not None and len(out) > at_most:
            break
    return out


def read_maps(io: PosixIO, proc_root: str, pid: int, denied_hint: str) -> bytes:
    path = f"{mm_dir(io, proc_root, pid)}/maps"
    try:
        return io.read_file(path)
    except OSError as e:
        raise ops_error(e, pid, path, denied_hint) from None


# -- /proc/PID/smaps -------------------------------------------------------------------------

_SMAPS_RE = re.compile(
    rb"^([0-9a-f]+)-([0-9a-f]+) |^(Rss|Pss|Referenced|Anonymous|Private_Clean|Private_Dirty):\s+(\d+) kB", re.M
)


@dataclass(frozen=True, slots=True)
class SmapsEntry:
    start: int
    end: int
    rss: int  # bytes
    referenced: int  # bytes
    anonymous: int = 0  # bytes (private to the process: no one else's flags reach them)
    #: proportional set size: each page divided by the number of processes mapping it
    #: (-1 where the file has no Pss line, a fake smaps: then it is ``rss``)
    pss: int = -1
    #: Private_Clean + Private_Dirty: pages only this process maps
    private: int = -1

    @property
    def proportional(self) -> int:
        """Pss, or Rss where smaps did not say."""
        return self.pss if self.pss >= 0 else self.rss

    @property
    def shared_share(self) -> int:
        """The part of Pss in pages other processes map too."""
        if self.pss < 0 or self.private < 0:
            return 0
        return max(0, self.pss - self.private)


_SMAPS_FIELDS = {b"Rss": 0, b"Referenced": 1, b"Anonymous": 2, b"Pss": 3, b"Private_Clean": 4, b"Private_Dirty": 5}


def parse_smaps(data: bytes) -> list[SmapsEntry]:
    """Start, end, Rss, Referenced, Anonymous, Pss and Private_* of each user mapping,
    sorted, in bytes; one regex pass touching only the header and those lines."""
    return iter_smaps((data,))


#: a mapping's header line, where one smaps entry ends and the next begins
_SMAPS_HEADER = re.compile(rb"^[0-9a-f]+-[0-9a-f]+ ", re.M)


def iter_smaps(chunks: Iterable[bytes]) -> list[SmapsEntry]:
    """:func:`parse_smaps` over a file read in chunks: only whole entries are parsed and
    only the unparsed tail is kept, so a process with 60,000 mappings (~70 MB of smaps)
    costs its entries, not its text (the text and a regex's match list over it would take
    over 100 MB)."""
    out: list[SmapsEntry] = []
    start = end = -1
    v = [-1] * 6
    limit = USER_ADDR_LIMIT

    def emit() -> None:
        if start >= 0 and start < limit:
            private = v[4] + v[5] if v[4] >= 0 and v[5] >= 0 else -1
            out.append(SmapsEntry(start, end, max(v[0], 0) * 1024, max(v[1], 0) * 1024, max(v[2], 0) * 1024,
                                  v[3] * 1024 if v[3] >= 0 else -1, private * 1024 if private >= 0 else -1))

    def parse(data: bytes) -> None:
        nonlocal start, end, v
        for m in _SMAPS_RE.finditer(data):
            s, e, key, value = m.groups()
            if s:
                emit()
                start, end = int(s, 16), int(e, 16)
                v = [-1] * 6
            else:
                v[_SMAPS_FIELDS[key]] = int(value)

    tail = b""
    for chunk in chunks:
        data = tail + chunk
        # parse up to the last header (the entry it begins may be incomplete); a header at
        # the very start means no whole entry yet
        last = None
        for m in _SMAPS_HEADER.finditer(data, max(0, len(tail) - 64)):
            last = m
        if last is None or last.start() == 0:
            tail = data
            continue
        parse(data[: last.start()])
        tail = data[last.start():]
    parse(tail)
    emit()
    if any(out[i].start < out[i - 1].start for i in range(1, len(out))):
        out.sort(key=lambda x: x.start)
    return out
