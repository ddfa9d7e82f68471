"""Decoding of /proc files: maps, stat, smaps, pagemap entries; error mapping."""

from __future__ import annotations

import errno
import ctypes
import mmap
import os
import struct

import pytest

from exporter.engines.page_idle.ranges import three_regions
from exporter.model.errors import AccessDenied, OpsError, ProcessGone
from exporter.model.process import ProcessRef
from exporter.procfs.pagemap import PM_PRESENT, PM_SWAPPED, Pagemap, PagemapEntry
from exporter.procfs.io import PosixIO, ops_error, u64s
from exporter.procfs.parsers import check_same_process, parse_file_maps, parse_maps, parse_smaps, parse_stat
from exporter.engines.page_idle.kpageflags import runs

PAGE = 4096


def test_maps_of_50000_mappings_and_three_regions(tmp_path):
    base = 0x10000000
    lines = []
    expected = []
    addr = base
    for i in range(50_000):
        start, end = addr, addr + PAGE
        perms = "r-xp" if i % 3 else "rw-p"
        name = "/usr/lib/lib with spaces (deleted)" if i % 7 == 0 else ("[heap]" if i == 5 else "")
        lines.append(f"{start:x}-{end:x} {perms} 00000000 fe:00 {i} {name}".rstrip())
        expected.append((start, end))
        addr = end + PAGE  # one page gap
        if i == 9_999:
            addr += 1 << 30  # the second largest gap
        if i == 29_999:
            addr += 2 << 30  # the largest gap
    lines.append("7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]")
    lines.append("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]")
    path = tmp_path / "maps"
    path.write_text("\n".join(lines) + "\n")
    maps = parse_maps(PosixIO().read_file(str(path)))
    assert len(maps) == 50_001
    assert maps[:50_000] == expected
    assert maps[-1] == (0x7FFD00000000, 0x7FFD00021000)
    regions = three_regions(maps)
    end_b = expected[29_999][1]
    # the two largest gaps are the stack gap and the 2 GiB one; the 1 GiB gap stays inside
    assert [(r.start, r.end) for r in regions] == [
        (base, end_b),
        (expected[30_000][0], expected[-1][1]),
        (0x7FFD00000000, 0x7FFD00021000),
    ]


def test_maps_skip_prot_none_and_sort():
    data = (
        b"3000-4000 rw-p 00000000 00:00 0\n"
        b"1000-2000 ---p 00000000 00:00 0\n"
        b"2000-3000 r--s 00000000 00:00 0   /dev/shm/x\n"
        b"800000000000-800000001000 rw-p 00000000 00:00 0\n"
    )
    assert parse_maps(data) == [(0x1000, 0x2000), (0x2000, 0x3000), (0x3000, 0x4000)]
    assert parse_maps(data, skip_prot_none=True) == [(0x2000, 0x3000), (0x3000, 0x4000)]
    assert parse_maps(b"") == []


def test_stat_with_parentheses_and_spaces_in_comm():
    rest = " ".join(["S", "1", "2", "3"] + ["0"] * 15 + ["987654"] + ["0"] * 30)
    st = parse_stat(f"123 (a) (b c)) {rest}\n".encode())
    assert (st.comm, st.state, st.start_time) == ("a) (b c)", "S", 987654)
    with pytest.raises(ValueError, match="malformed stat line"):
        parse_stat(b"123 no parens")
    with pytest.raises(ValueError, match="stat line has 5 fields, expected at least 22"):
        parse_stat(b"1 (x) S 1 2")


def test_real_stat_of_this_process():
    st = check_same_process(PosixIO(), "/proc", ProcessRef(os.getpid()), "hint")
    assert st.state in ("R", "S")
    assert check_same_process(PosixIO(), "/proc", ProcessRef(os.getpid(), st.start_time), "hint") == st
    with pytest.raises(ProcessGone, match=f"process {os.getpid()} exited \\(pid reused\\)"):
        check_same_process(PosixIO(), "/proc", ProcessRef(os.getpid(), st.start_time + 1), "hint")


def test_smaps_parsing():
    data = (
        b"00400000-00401000 r-xp 00000000 fe:00 1   /bin/x\n"
        b"Size:                  4 kB\nRss:                   4 kB\nPss:  4 kB\n"
        b"Referenced:            4 kB\nAnonymous: 0 kB\nVmFlags: rd ex\n"
        b"7f0000000000-7f0000100000 rw-p 00000000 00:00 0 \n"
        b"Size:               1024 kB\nRss:                 512 kB\nReferenced:            0 kB\n"
        b"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0   [vsyscall]\n"
        b"Rss:                   0 kB\nReferenced:            0 kB\n"
    )
    got = [(m.start, m.end, m.rss, m.referenced) for m in parse_smaps(data)]
    assert got == [(0x400000, 0x401000, 4096, 4096), (0x7F0000000000, 0x7F0000100000, 512 << 10, 0)]


def test_pagemap_entry_bits_of_a_real_page():
    m = mmap.mmap(-1, 2 * PAGE)
    m[0] = 1  # first page present, second never touched
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    pm = Pagemap(PosixIO(), "/proc", os.getpid(), "hint")
    try:
        e0, e1 = pm.entries(addr // PAGE, 2)
        assert PagemapEntry(e0).present and not PagemapEntry(e0).swapped
        assert PagemapEntry(e0).exclusive
        assert not PagemapEntry(e1).present and PagemapEntry(e1).pfn == 0
        assert pm.alive()
    finally:
        pm.close()
    assert PagemapEntry(PM_PRESENT | 1234).pfn == 1234
    assert PagemapEntry(PM_SWAPPED | 1234).pfn == 0


def test_u64s_and_runs():
    assert list(u64s(struct.pack("=3Q", 1, 2, 3) + b"\x01")) == [1, 2, 3]
    assert list(runs([100, 5, 7, 300, 102], 4)) == [(5, 3, [1, 2]), (100, 3, [0, 4]), (300, 1, [3])]


@pytest.mark.parametrize(
    "err, kind, message",
    [
        (errno.ENOENT, ProcessGone, "process 7 exited"),
        (errno.ESRCH, ProcessGone, "process 7 exited"),
        (errno.EACCES, AccessDenied, "cannot access /proc/7/smaps: Permission denied; need X"),
        (errno.EPERM, AccessDenied, "cannot access /proc/7/smaps: Operation not permitted; need X"),
        (errno.EIO, OpsError, "cannot read /proc/7/smaps: Input/output error"),
    ],
)
def test_os_errors_map_to_ops_errors(err, kind, message):
    e = ops_error(OSError(err, os.strerror(err)), 7, "/proc/7/smaps", "need X")
    assert type(e) is kind
    assert str(e) == message


def test_runs_never_exceed_one_page_of_entries():
    pages = list(range(0, 3000, 10))  # every neighbour close, 3000 entries in all
    got = list(runs(pages, 64))
    assert all(count <= 512 for _, count, _ in got)
    assert sorted(i for _, _, idx in got for i in idx) == list(range(len(pages)))
    assert [first for first, _, _ in got] == [0, 520, 1040, 1560, 2080, 2600]


@pytest.mark.skipif(os.geteuid() != 0, reason="PFNs in pagemap need CAP_SYS_ADMIN")
def test_zero_page_is_not_resident():
    """Memory only read maps the shared zero page: present in pagemap, but in nobody's RSS."""
    import random

    from exporter.procfs.pagemap import Pagemap, Residency, resident_bytes_pagemap, zero_page_pfn
    from exporter.procfs.io import PosixIO

    io = PosixIO()
    zero = zero_page_pfn(io, "/proc")
    assert zero and zero > 0
    pages = 64
    m = mmap.mmap(-1, pages * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        for i in range(0, 32):
            m[i * 4096]  # read: the zero page
        for i in range(32, 48):
            m[i * 4096] = 1  # written: a page of our own
        view = ctypes.c_char.from_buffer(m)
        addr = ctypes.addressof(view)
        del view
        pm = Pagemap(io, "/proc", os.getpid(), "")
        try:
            rng = random.Random(0)
            with_zero = resident_bytes_pagemap(pm, [(addr, addr + pages * 4096)], rng)
            without = resident_bytes_pagemap(pm, [(addr, addr + pages * 4096)], rng, zero)
        finally:
            pm.close()
    finally:
        m.close()
    # pagemap calls the zero-page mappings present (and, as the zero page is mapped by
    # everyone, not exclusive): unknown, they count whole
    assert with_zero == [Residency(48 * 4096, 32 * 4096)]
    assert without == [Residency(16 * 4096, 0)]  # only the written pages are resident


class _Counts:
    """kpagecount of a simulation: every shared page has ``mappers`` page tables."""

    def __init__(self, mappers: int) -> None:
        self.mappers = mappers
        self.reads = 0

    def count(self, pfn: int) -> int:
        self.reads += 1
        return self.mappers


def test_tally_counts_each_page_by_its_share():
    """Exclusive pages count whole at C speed; shared ones by 1/mappers from kpagecount
    (read for a bounded sample only); the zero page counts nothing; without kpagecount a
    shared page counts whole."""
    import random
    import struct

    from exporter.procfs.pagemap import PM_EXCLUSIVE, PM_PRESENT, SHARED_SAMPLE, tally

    rng = random.Random(1)
    zero = 0x5
    for _ in range(300):
        mappers = rng.choice([2, 3, 5])
        es, truth, truth_shared, no_counts = [], 0.0, 0.0, 0
        for _ in range(rng.randrange(1, 300)):
            k = rng.random()
            pfn = rng.randrange(0x100, 1 << 40)
            if k < 0.3:
                es.append(0)
            elif k < 0.4:
                es.append(zero | PM_PRESENT | (1 << 61))  # the zero page: never exclusive
            elif k < 0.5:
                es.append((1 << 62) | pfn)  # swapped: not present
            elif k < 0.75:
                es.append(PM_PRESENT | PM_EXCLUSIVE | pfn)
                truth += 1
                no_counts += 1
            else:
                es.append(PM_PRESENT | pfn)  # shared, with ``mappers`` page tables
                truth += 1 / mappers
                truth_shared += 1 / mappers
                no_counts += 1
        buf = struct.pack(f"={len(es)}Q", *es)
        zeros = sum(1 for e in es if e & PM_PRESENT and not e & PM_EXCLUSIVE and (e & ((1 << 55) - 1)) == zero)
        shared_entries = sum(1 for e in es if e & PM_PRESENT and not e & PM_EXCLUSIVE) - zeros
        counts = _Counts(mappers)
        pages, shared = tally(buf, rng, zero, counts)
        assert counts.reads <= SHARED_SAMPLE
        if not zeros:
            # every shared page has the same number of mappers: the sample mean is exact
            assert abs(pages - truth) < 1e-6 and abs(shared - truth_shared) < 1e-6
        elif not shared_entries:
            # only the zero page among the shared entries: it weighs nothing, exactly
            assert abs(pages - truth) < 1e-6 and shared == 0
        else:
            # zero and real shared pages mixed: a sample mean, within the pages sampled
            assert 0 <= shared <= (shared_entries + zeros) / 2 and truth - truth_shared <= pages
        # no kpagecount: shared pages count whole (as RSS does)
        pages, shared = tally(buf, rng, zero if not shared_entries else None, None)
        assert abs(pages - (no_counts + (zeros if shared_entries else 0))) < 1e-6


def test_forked_copy_on_write_pages_count_by_share_on_this_kernel():
    """The host kernel's pagemap and kpagecount: after a fork, the pages both map count
    half in each; after a second fork, a third."""
    import random
    import signal
    import time

    from exporter.procfs.pagemap import Pagemap, PageCounts, Residency, resident_bytes_pagemap, zero_page_pfn
    from exporter.procfs.io import PosixIO

    io = PosixIO()
    counts = PageCounts.open(io, "/proc")
    assert counts is not None, "the tests run as root: /proc/kpagecount is readable"
    zero = zero_page_pfn(io, "/proc")
    pages = 1024
    m = mmap.mmap(-1, pages * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    children = []
    try:
        for i in range(512):
            m[i * 4096] = 1
        view = ctypes.c_char.from_buffer(m)
        addr = ctypes.addressof(view)
        del view
        pm = Pagemap(io, "/proc", os.getpid(), "")
        rng = random.Random(0)
        span = [(addr, addr + pages * 4096)]
        try:
            assert resident_bytes_pagemap(pm, span, rng, zero, counts=counts) == [Residency(512 * 4096, 0)]
            for mappers in (2, 3):
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:  # the child only waits: its copy-on-write pages stay shared
                    os.close(r)
                    os.write(w, b"1")
                    time.sleep(60)
                    os._exit(0)
                os.close(w)
                os.read(r, 1)
                os.close(r)
                children.append(pid)
                got = resident_bytes_pagemap(pm, span, rng, zero, counts=counts)
                assert got == [Residency(round(512 / mappers) * 4096, round(512 / mappers) * 4096)]
        finally:
            pm.close()
            counts.close()
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        m.close()


def test_nth_marks_finds_each_rank():
    import random

    from exporter.procfs.pagemap import nth_marks

    rng = random.Random(3)
    for _ in range(200):
        marks = bytes(1 if rng.random() < rng.choice([0.01, 0.3, 0.9]) else 0 for _ in range(rng.randrange(1, 2000)))
        ones = [i for i, b in enumerate(marks) if b]
        if not ones:
            continue
        ranks = [rng.randrange(len(ones)) for _ in range(rng.randrange(1, 40))]
        assert nth_marks(marks, ranks) == [ones[r] for r in ranks]


def test_tally_draws_shared_pages_alike_wherever_they_sit():
    """Shared pages with different numbers of mappers, laid out so that the few with 2
    mappers each follow a gap (as a server's shared buffers look from one backend): the
    mean share must be drawn alike among them. Drawing "the first shared page after a
    random place" read 44.2 for a truth of 28.0 here. Tolerance: 2000 tallies of 2 picks,
    the per-pick share's standard deviation is 0.105 (shares 0.1 and 0.5 at 200:16), so the
    mean of 216 x share has a standard deviation of 216 x 0.105 / sqrt(4000) = 0.36; 4.5 of
    them (1.6 pages) fail a right estimator once in 10^5 runs."""
    import random
    import statistics
    import struct

    from exporter.procfs.pagemap import PM_PRESENT, tally

    mappers: dict[int, int] = {}
    es, pfn = [], 0x1000
    for _ in range(200):
        es.append(PM_PRESENT | pfn)
        mappers[pfn] = 10
        pfn += 1
    es += [0] * 40
    for _ in range(16):
        es += [PM_PRESENT | pfn, 0]
        mappers[pfn] = 2
        pfn += 1

    class Counts:
        def count(self, pfn: int) -> int:
            return mappers[pfn]

    buf = struct.pack(f"={len(es)}Q", *es)
    rng = random.Random(1)
    est = statistics.mean(tally(buf, rng, None, Counts(), 2)[1] for _ in range(2000))
    assert abs(est - (200 * 0.1 + 16 * 0.5)) <= 1.6, est


def test_parse_file_maps_names_each_file_by_device_and_inode():
    """Files (shmem included) with their device as the kernel's MKDEV and their offset;
    private anonymous memory and the kernel's own mappings are left out; a file name is
    anyone's bytes and never read."""
    data = (b"00400000-00401000 r-xp 00000000 08:01 1234     /usr/bin/x\n"
            b"00600000-00700000 rw-p 00000000 00:00 0        [heap]\n"
            b"7f0000000000-7f0004000000 rw-s 00000000 00:01 77   /dev/zero (deleted)\n"
            b"7f0004000000-7f0004001000 r--s 0001f000 fd:10 9 /tmp/a \xff name 00000000 08:01 5\n"
            b"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]\n")
    assert parse_file_maps(data) == [
        (0x400000, 0x401000, (8 << 20) | 1, 1234, 0),
        (0x7F0000000000, 0x7F0004000000, 1, 77, 0),
        (0x7F0004000000, 0x7F0004001000, (0xFD << 20) | 0x10, 9, 0x1F000),
    ]
    assert parse_file_maps(b"") == []
