"""Shared pages are the same memory only where they are the same frames, on this host's
kernel (clear_refs).

Two unrelated process trees of one program, started with ASLR off (``setarch -R``, as some
containers run programs), so both map their buffer at the same address: each parent writes
256 MiB and forks 4 readers; one tree's readers keep reading the top 32 MiB, the other's
read nothing. One target holds all ten processes. Truth: resident 512 MiB, working set
32 MiB, cold 480 MiB. Matching the trees' pages by address alone took the busy tree's use
for the idle tree's too (working set 64, cold 450 MiB).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from tests.engines.test_shared_memory_host import OVERHEAD, pss
from tests.support.exporter import fast_config
from tests.support.workloads import build_workload

MiB = 1 << 20
SIZE, HOT, READERS = 256, 32, 4


def start_tree(binary: str, hot: int) -> tuple[subprocess.Popen, list[dict]]:
    p = subprocess.Popen(["setarch", "-R", binary, "--size", str(SIZE), "--hot", str(hot), "--readers", str(READERS),
                          "--no-tlb-flush", "--period-us", "20000"], stdout=subprocess.PIPE, text=True)
    ready = []
    for _ in range(READERS + 1):
        line = p.stdout.readline()
        assert line.startswith("READY "), f"workload failed: exit {p.poll()}"
        ready.append(json.loads(line[6:]))
    return p, ready


@pytest.fixture
def two_trees(tmp_path):
    if shutil.which("setarch") is None:
        pytest.fail("setarch (util-linux) is needed to start the trees without ASLR")
    name = f"dxtt{os.getpid() % 100000}"[:15]
    binary = build_workload("workload.c", tmp_path, name)
    trees = []
    try:
        for hot in (HOT, 0):
            trees.append(start_tree(binary, hot))
        addrs = {r["addr"] for _, ready in trees for r in ready}
        assert len(addrs) == 1, f"the trees' buffers are not at one address: {sorted(addrs)}"
        yield name, [r["pid"] for _, ready in trees for r in ready]
    finally:
        for p, _ in trees:
            p.kill()
            p.wait()
            p.stdout.close()


@pytest.mark.slow
def test_two_trees_at_one_address_are_not_one_memory(two_trees, exporter):
    comm, pids = two_trees
    e = exporter("backend: clear_refs\n" + fast_config(f"  - name: tt\n    match:\n      comm: [{comm}]\n",
                                                        cold_age="6s", window="3s", sample="100ms",
                                                        aggregation="1s", update="1s"))
    e.wait_ready()
    e.wait_for(lambda s: s.get("damon_target_processes", target="tt") == 2 * (READERS + 1), what="all ten processes")
    e.wait_for(lambda s: (s.get("damon_cold_bytes", target="tt") or 0) > 0, timeout=30, what="a cold figure")
    seen = []
    for _ in range(4):
        time.sleep(1.0)
        seen.append(e.scrape())
    truth = sum(pss(p) for p in pids)
    assert abs(truth - 2 * SIZE * MiB) <= OVERHEAD * 2, truth / MiB
    for s in seen:
        resident = s.get("damon_resident_bytes", target="tt")
        ws, ws_err = s.get("damon_working_set_bytes", target="tt"), s.get("damon_working_set_error_bytes", target="tt")
        cold, cold_err = s.get("damon_cold_bytes", target="tt"), s.get("damon_cold_error_bytes", target="tt")
        detail = (f"resident {resident / MiB:.1f} (Pss {truth / MiB:.1f}), working set {ws / MiB:.1f} ± {ws_err / MiB:.1f}, "
                  f"cold {cold / MiB:.1f} ± {cold_err / MiB:.1f} MiB")
        print(detail)
        assert abs(resident - truth) <= 0.10 * truth, detail
        assert abs(ws - HOT * MiB) <= 0.20 * HOT * MiB + OVERHEAD, detail
        assert abs(cold - (2 * SIZE - HOT) * MiB) <= 0.10 * (2 * SIZE - HOT) * MiB, detail


@pytest.mark.slow
def test_copy_on_write_broken_by_a_write_is_the_writer_own_memory(tmp_path, exporter):
    """The parent writes every page of its 256 MiB once after forking 4 readers of the top
    32 MiB: its pages are new frames of its own (idle since), the readers share the old
    ones. Truth: resident 512 MiB, working set 32, cold 480."""
    name = f"dxcw{os.getpid() % 100000}"[:15]
    binary = build_workload("workload.c", tmp_path, name)
    p = subprocess.Popen([binary, "--size", str(SIZE), "--hot", str(HOT), "--readers", str(READERS), "--rewrite",
                          "--no-tlb-flush", "--period-us", "20000"], stdout=subprocess.PIPE, text=True)
    try:
        pids = [json.loads(p.stdout.readline()[6:])["pid"] for _ in range(READERS + 1)]
        e = exporter("backend: clear_refs\n" + fast_config(f"  - name: cw\n    match:\n      comm: [{name}]\n",
                                                            cold_age="6s", window="3s", sample="100ms",
                                                            aggregation="1s", update="1s"))
        e.wait_ready()
        e.wait_for(lambda s: s.get("damon_target_processes", target="cw") == READERS + 1, what="all five processes")
        e.wait_for(lambda s: (s.get("damon_cold_bytes", target="cw") or 0) > 0, timeout=30, what="a cold figure")
        time.sleep(2.0)
        s = e.scrape()
        truth = sum(pss(pid) for pid in pids)
        resident = s.get("damon_resident_bytes", target="cw")
        ws, cold = s.get("damon_working_set_bytes", target="cw"), s.get("damon_cold_bytes", target="cw")
        detail = f"resident {resident / MiB:.1f} (Pss {truth / MiB:.1f}), working set {ws / MiB:.1f}, cold {cold / MiB:.1f} MiB"
        print(detail)
        assert abs(truth - 2 * SIZE * MiB) <= 2 * OVERHEAD, detail
        assert abs(resident - truth) <= 0.10 * truth, detail
        assert abs(ws - HOT * MiB) <= 0.20 * HOT * MiB + OVERHEAD, detail
        assert abs(cold - (2 * SIZE - HOT) * MiB) <= 0.10 * (2 * SIZE - HOT) * MiB, detail
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


@pytest.mark.slow
def test_two_programs_that_map_one_file_at_their_own_addresses_share_its_pages(tmp_path, exporter):
    """Two unrelated programs map one 64 MiB file (shared, read-only) wherever their own
    address space puts it and read all of it once; then one reads its first 16 MiB every
    100 ms, the other nothing. Truth: resident 64 MiB (each page once), working set 16,
    cold 48. Matched by address, the pages the reader uses could count as half used
    (working set 8 MiB), the other program's view of them idle. (On a node whose kernel
    DAMON checks physical memory, as this host's does, smaps' Referenced of a shared page
    also shows other mappers' use, part of the time: DAMON's check moves a mapping's
    accessed bit into the page's young flag, which smaps reports for every mapping.)"""
    name = f"dxft{os.getpid() % 100000}"[:15]
    binary = build_workload("filetouch.c", tmp_path, name)
    data = tmp_path / "file"
    data.write_bytes(os.urandom(1 << 20) * 64)
    procs = [subprocess.Popen([binary, str(data), "0", "64", str(period), str(hot)], stdout=subprocess.PIPE, text=True)
             for hot, period in ((16, 100), (0, 10**8))]
    try:
        for p in procs:
            assert p.stdout.readline().startswith("ready"), f"filetouch failed: exit {p.poll()}"
        bases = {line.split()[0].split("-")[0] for p in procs
                 for line in open(f"/proc/{p.pid}/maps") if line.rstrip().endswith(str(data))}
        assert len(bases) == 2, f"the programs map the file at one address: {bases}"
        e = exporter("backend: clear_refs\n" + fast_config(f"  - name: ft\n    match:\n      comm: [{name}]\n",
                                                            cold_age="6s", window="3s", sample="100ms",
                                                            aggregation="1s", update="1s"))
        e.wait_ready()
        e.wait_for(lambda s: s.get("damon_target_processes", target="ft") == 2, what="both programs")
        e.wait_for(lambda s: (s.get("damon_cold_bytes", target="ft") or 0) > 0, timeout=30, what="a cold figure")
        time.sleep(2.0)
        truth = sum(pss(p.pid) for p in procs)
        assert abs(truth - 64 * MiB) <= OVERHEAD, truth / MiB
        for _ in range(3):
            time.sleep(1.0)
            s = e.scrape()
            resident = s.get("damon_resident_bytes", target="ft")
            ws, ws_err = s.get("damon_working_set_bytes", target="ft"), s.get("damon_working_set_error_bytes", target="ft")
            cold = s.get("damon_cold_bytes", target="ft")
            detail = (f"resident {resident / MiB:.1f} (Pss {truth / MiB:.1f}), working set {ws / MiB:.1f} ± "
                      f"{ws_err / MiB:.1f}, cold {cold / MiB:.1f} MiB")
            print(detail)
            assert abs(resident - truth) <= 0.10 * truth, detail
            assert abs(ws - 16 * MiB) <= 0.20 * 16 * MiB + OVERHEAD, detail
            assert abs(cold - 48 * MiB) <= 0.10 * 48 * MiB + OVERHEAD, detail
    finally:
        for p in procs:
            p.kill()
            p.wait()
            p.stdout.close()
