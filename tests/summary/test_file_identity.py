"""Shared pages of one file matched by offset where processes map it at different addresses.

Two programs that map one file (a database file, a library's text, a SysV segment) at
different addresses hold the same page-cache pages there. By address their views never
meet; by file and offset they are one memory, and a page either program used is used."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.model.records import FileMapping, RegionRecord, TargetRecords
from exporter.summary import Policy, summarize_target
from exporter.summary.file_identity import FILE_SPACE, moved_mappings, relocate

MiB = 1 << 20
A = 0x7F00_0000_0000
B = 0x7E00_0000_0000  # where the second program maps the file
DEV, INO = (8 << 20) | 1, 4242


def point(pid, start, size_mib, resident_mib, shared_mib, *, acc=0, idle=0.0, checks=20):
    return RegionRecord(pid, start, start + size_mib * MiB, int(resident_mib * MiB), nr_accesses=acc,
                        nr_checks=checks, idle_seconds=0.0 if acc else idle, shared_bytes=int(shared_mib * MiB))


def referenced(pid, start, size_mib, untouched_mib, *, window=10.0):
    """A clear_refs-like record of a 64 MiB file mapping shared by two processes (half each
    by share): ``untouched_mib`` of the mapping's pages not referenced within ``window``."""
    rss = size_mib * MiB
    share = rss // 2
    return RegionRecord(pid, start, start + rss, share, shared_bytes=share,
                        idle_distribution=((window, untouched_mib * MiB // 2), (600.0, untouched_mib * MiB // 2)))


def target(regions, files=()):
    return TargetRecords("t", tuple(sorted({r.pid for r in regions})), tuple(regions), 0.0,
                         file_mappings=tuple(files))


def summary(regions, files=(), access_per_page=False):
    return summarize_target(target(regions, files), Policy(60.0, 10.0), 0.5, access_per_page)


def two_programs(size=64):
    """Program 1 maps the file at A, program 2 at B; both map all ``size`` MiB of it."""
    return (FileMapping(1, A, A + size * MiB, DEV, INO, 0), FileMapping(2, B, B + size * MiB, DEV, INO, 0))


def test_a_file_page_one_program_reads_is_used_though_the_other_only_maps_it():
    """Per-mapping checks (kernel DAMON's vaddr, clear_refs): program 1 reads the file,
    program 2 maps it and reads nothing. By address, each counts its half of the pages by
    its own view: 32 MiB used of 64. By offset they are one memory: all 64 used."""
    regions = [point(1, A, 64, 32, 32, acc=20), point(2, B, 64, 32, 32, idle=600.0)]
    by_address = summary(regions)
    assert by_address.working_set_bytes == 32 * MiB
    by_file = summary(regions, two_programs())
    assert by_file.resident_bytes == 64 * MiB
    assert by_file.working_set_bytes == 64 * MiB
    assert by_file.cold_bytes == 0


def test_referenced_bytes_of_one_file_count_once_with_the_views_spread_as_error():
    """clear_refs: program 1 referenced 16 MiB of the file within the window, program 2
    8 MiB. smaps does not say which pages: the file's used pages are between the larger
    view (16: program 2's may be among program 1's) and their sum (24). The figure is the
    larger view and its error reaches the sum; by address, half of each view is counted
    (12 MiB) with an error that reaches neither bound."""
    regions = [referenced(1, A, 64, 48), referenced(2, B, 64, 56)]
    by_address = summary(regions)
    assert by_address.working_set_bytes == 12 * MiB
    assert by_address.working_set_error_bytes < 4 * MiB
    by_file = summary(regions, two_programs())
    assert by_file.resident_bytes == 64 * MiB
    assert by_file.working_set_bytes == 16 * MiB
    assert by_file.working_set_error_bytes >= 8 * MiB


def test_a_region_over_a_file_and_other_memory_is_cut_at_the_mapping():
    """Program 2's region covers 32 MiB of its own memory and the 64 MiB file mapping: the
    part over the file meets program 1's view by offset; the rest stays its own."""
    own = 32
    regions = [point(1, A, 64, 32, 32, acc=20), point(2, B - own * MiB, own + 64, own + 32, 32 * (own + 64) / 64,
                                                       idle=600.0)]
    moved = relocate(regions, two_programs())
    parts = [r for r in moved.regions if r.pid == 2]
    assert [(r.start >= FILE_SPACE, r.end - r.start) for r in parts] == [(False, own * MiB), (True, 64 * MiB)]
    assert sum(r.resident_bytes for r in parts) == regions[1].resident_bytes
    assert sum(r.shared_bytes for r in parts) == regions[1].shared_bytes
    assert all(moved.source(r) is regions[1] for r in parts)
    t = summary(regions, two_programs())
    assert t.resident_bytes == 32 * MiB + regions[1].resident_bytes
    # program 2's part over the file (its bytes by length) takes program 1's view
    assert t.working_set_bytes == 32 * MiB + regions[1].shared_bytes * 64 // (own + 64)


def test_pieces_come_back_at_their_own_processes_addresses_naming_the_region_that_was_read():
    regions = [point(1, A, 64, 32, 32, acc=20), point(2, B, 64, 32, 32, idle=600.0)]
    from exporter.summary.stat import idle_at_least, in_working_set
    from exporter.summary.sharing import share_access

    out, _, _ = share_access(regions, lambda r: in_working_set(r, 10.0) / r.resident_bytes,
                             lambda r: idle_at_least(r, 60.0) / r.resident_bytes, doubt=(lambda r: 0.0, lambda r: 0.0),
                             files=two_programs())
    pieces = out[2:]
    assert pieces and all(p.end <= 1 << 57 for p in pieces)
    for p in pieces:
        home = A if p.pid == 1 else B
        assert home <= p.start < p.end <= home + 64 * MiB
        assert p.evidence == (1, A, A + 64 * MiB)  # program 1's region, as the engine gave it
    assert sum(r.resident_bytes for r in out) == 64 * MiB


def test_a_file_every_process_maps_at_one_base_is_left_where_it_is():
    """Forked processes map a file where their parent did: address and offset agree, and
    nothing is moved (frames still tell unrelated programs at one address apart)."""
    files = [FileMapping(1, A, A + 64 * MiB, DEV, INO, 0), FileMapping(2, A, A + 64 * MiB, DEV, INO, 0),
             FileMapping(2, A + 64 * MiB, A + 96 * MiB, DEV, INO, 64 * MiB)]
    assert moved_mappings(files) == {}
    regions = [point(1, A, 64, 32, 32, acc=20), point(2, A, 64, 32, 32, idle=600.0)]
    moved = relocate(regions, files)
    assert moved.regions == regions and not moved.origin


def test_the_physical_check_keeps_its_views_and_compares_them_by_offset():
    """page_idle's check sees every mapper's access, so its records stay as they are; the
    views of one file at two addresses are compared for the disagreement error."""
    regions = [point(1, A, 64, 32, 32, acc=20), point(2, B, 64, 32, 32, idle=600.0)]
    plain = summary(regions, access_per_page=True)
    by_file = summary(regions, two_programs(), access_per_page=True)
    assert by_file.working_set_bytes == plain.working_set_bytes == 32 * MiB
    assert by_file.working_set_error_bytes >= 32 * MiB > plain.working_set_error_bytes


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 63), st.integers(1, 64), st.integers(0, 1)),
                min_size=1, max_size=12),
       st.lists(st.tuples(st.integers(1, 4), st.integers(0, 255), st.integers(0, 63), st.integers(1, 32)),
                max_size=8))
def test_moving_regions_into_a_files_coordinates_keeps_every_byte(layout, maps):
    """Random regions of four processes and random mappings of one file: the parts of each
    region add up to it, and the summary's resident bytes are the records' own."""
    regions = [point(pid, A + pid * (1 << 36) + s * MiB, n, n / 2, n / 4, acc=20 * hot, idle=0.0 if hot else 600.0)
               for pid, s, n, hot in layout]
    files = [FileMapping(pid, A + pid * (1 << 36) + s * MiB, A + pid * (1 << 36) + (s + n) * MiB, DEV, INO,
                         off * MiB) for pid, s, off, n in maps]
    moved = relocate(regions, files)
    for r in regions:
        parts = [p for p in moved.regions if moved.source(p) is r]
        assert sum(p.resident_bytes for p in parts) == r.resident_bytes
        assert sum(p.shared_bytes for p in parts) == r.shared_bytes
        assert sum(p.end - p.start for p in parts) == r.end - r.start
    t = summary(regions, files)
    assert abs(t.resident_bytes - sum(r.resident_bytes for r in regions)) <= len(regions)
    assert t.working_set_bytes + t.cold_bytes <= t.resident_bytes + len(regions)


def test_pages_meet_at_their_file_offset_not_at_their_place_in_the_mapping():
    """Program 2 maps only the file's bytes from 16 MiB on; program 1 maps it all and reads
    the first 16 MiB. The pages program 2 maps are ones program 1 leaves idle: nothing of
    program 2's is used. Matched by place in the mapping instead, program 2's first 16 MiB
    would take program 1's hot view."""
    files = (FileMapping(1, A, A + 64 * MiB, DEV, INO, 0), FileMapping(2, B, B + 48 * MiB, DEV, INO, 16 * MiB))
    regions = [point(1, A, 16, 8, 8, acc=20), point(2, B, 48, 24, 24, idle=600.0),
               point(1, A + 16 * MiB, 48, 24, 24, idle=600.0)]
    t = summary(regions, files)
    assert t.resident_bytes == 56 * MiB
    assert t.working_set_bytes == 8 * MiB  # program 1's hot 16 MiB, its half by share
    assert t.cold_bytes == 48 * MiB


def test_programs_that_map_one_file_are_one_memory_there_whatever_their_frames_elsewhere():
    """Two unrelated programs: where they overlap by address, their frames differ (each its
    own heap at one address, as without ASLR); the file they both map is still one memory."""
    regions = [point(1, A, 64, 32, 32, acc=20), point(2, B, 64, 32, 32, idle=600.0),
               point(1, 0x5500_0000_0000, 8, 4, 4, acc=20), point(2, 0x5500_0000_0000, 8, 4, 4, idle=600.0)]
    regions[2] = replace(regions[2], frames=((0x5500_0000_0000, 11),))
    regions[3] = replace(regions[3], frames=((0x5500_0000_0000, 12),))
    t = summary(regions, two_programs())
    assert t.working_set_bytes == 64 * MiB + 4 * MiB  # the file whole; program 1's heap share


def test_engines_read_file_mappings_only_where_two_processes_share_and_only_over_shared_regions():
    """A target whose shared regions are one process' costs no read of maps; a process whose
    maps cannot be read is matched by address; mappings away from shared regions are not
    handed on; a process' maps are read once per interval (the regions update interval)."""
    from exporter.engines.identity import FileMaps
    from exporter.model.errors import ProcessGone

    maps = {1: b"%x-%x r--s 00000000 08:01 4242 /f\n%x-%x r-xp 00000000 08:01 7 /lib\n" % (A, A + 64 * MiB, 0x1000, 0x2000),
            2: b"%x-%x r--s 00100000 08:01 4242 /f\n" % (B, B + 64 * MiB)}
    reads = []

    def read(pid):
        reads.append(pid)
        if pid == 3:
            raise ProcessGone("gone")
        return maps[pid]

    now = [0.0]
    cache = FileMaps(lambda: now[0])
    one = [point(1, A, 64, 32, 32, acc=20), point(2, B, 64, 64, 0)]
    assert cache.of(one, read, 60.0) == () and reads == []
    both = [point(1, A, 64, 32, 32, acc=20), point(2, B, 64, 32, 32), point(3, A, 8, 4, 4)]
    expected = (FileMapping(1, A, A + 64 * MiB, DEV, INO, 0), FileMapping(2, B, B + 64 * MiB, DEV, INO, MiB))
    assert cache.of(both, read, 60.0) == expected
    assert reads == [1, 2, 3]
    now[0] = 59.0
    assert cache.of(both, read, 60.0) == expected
    assert reads == [1, 2, 3, 3]  # what could not be read is asked again; the rest is kept
    now[0] = 60.0
    assert cache.of(both, read, 60.0) == expected
    assert reads == [1, 2, 3, 3, 1, 2, 3]


def test_a_process_with_more_file_mappings_than_the_bound_is_matched_by_address():
    """A process may hold 65,530 mappings: past MAX_FILE_MAPPINGS its file mappings are
    neither kept nor handed on (its shared regions are matched by address)."""
    from exporter.engines.identity import MAX_FILE_MAPPINGS, FileMaps

    many = b"".join(b"%x-%x r--p 00000000 08:01 %d /lib%d\n" % (A + i * 4096, A + (i + 1) * 4096, 100 + i, i)
                    for i in range(MAX_FILE_MAPPINGS + 1))
    few = b"%x-%x r--s 00000000 08:01 4242 /f\n" % (B, B + 64 * MiB)
    cache = FileMaps(lambda: 0.0)
    regions = [point(1, A, 64, 32, 32, acc=20), point(2, B, 64, 32, 32)]
    out = cache.of(regions, {1: many, 2: few}.get, 60.0)
    assert out == (FileMapping(2, B, B + 64 * MiB, DEV, INO, 0),)
    assert cache._read_at[1] == (0.0, None)
    from exporter.procfs.parsers import parse_file_maps

    assert len(parse_file_maps(many + many, MAX_FILE_MAPPINGS)) == MAX_FILE_MAPPINGS + 1  # the rest is not built
    fewer = b"".join(many.splitlines(keepends=True)[:MAX_FILE_MAPPINGS])
    assert len(FileMaps(lambda: 0.0).of(regions, {1: fewer, 2: few}.get, 60.0)) == MAX_FILE_MAPPINGS + 1
