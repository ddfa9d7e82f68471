"""Each page counted once, on this host's kernel (clear_refs): forked workers that share
copy-on-write pages, and a real PostgreSQL whose backends share its buffers.

Truth for the forked readers (``tests/workloads/workload.c --readers``): one parent writes
a 256 MiB buffer and forks 4 children that keep *reading* its top 32 MiB, so all five map
the same pages: resident 256 MiB, working set 32 MiB, cold 224 MiB, however many of them.
Summing each process' view, as the engines did, gave 1284 / 132 / 897 MiB.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.exporter import fast_config
from tests.support.workloads import build_workload

MiB = 1 << 20
SIZE, HOT, READERS = 256, 32, 4
#: the five processes' own code, stack and libc pages, by share
OVERHEAD = 4 * MiB


def pss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no Pss for {pid}")


def pss_of_mappings_with_shared_pages(pid: int) -> int:
    """Pss of the mappings of ``pid`` that hold any page shared with another mapping: the only
    bytes the Rss-to-Pss scaling and the processes' disagreement over shared memory can
    misplace (an all-private mapping is counted exactly)."""
    total, fields = 0, {}
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines() + ["end-of-file"]:
        head = line.split(None, 1)[0]
        if "-" in head or head == "end-of-file":  # a mapping's first line: the last one is complete
            if fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0) > 0:
                total += fields.get("Pss", 0)
            fields = {}
        elif head.endswith(":") and line.split()[1].isdigit():
            fields[head[:-1]] = int(line.split()[1]) * 1024
    return total


@pytest.fixture
def readers(tmp_path):
    name = f"dxrd{os.getpid() % 100000}"
    binary = build_workload("workload.c", tmp_path, name)
    p = subprocess.Popen([binary, "--size", str(SIZE), "--hot", str(HOT), "--readers", str(READERS),
                          "--no-tlb-flush", "--period-us", "20000"], stdout=subprocess.PIPE, text=True)
    pids = []
    for _ in range(READERS + 1):
        line = p.stdout.readline()
        assert line.startswith("READY "), f"workload failed: exit {p.poll()}"
        pids.append(json.loads(line[6:])["pid"])
    yield name[:15], pids
    p.kill()
    p.wait()
    p.stdout.close()


@pytest.mark.slow
def test_forked_readers_count_each_page_once_at_every_scrape(readers, exporter):
    comm, pids = readers
    e = exporter("backend: clear_refs\n" + fast_config(f"  - name: rd\n    match:\n      comm: [{comm}]\n",
                                                        cold_age="6s", window="3s", sample="100ms",
                                                        aggregation="1s", update="1s"))
    e.wait_ready()
    e.wait_for(lambda s: s.get("damon_target_processes", target="rd") == READERS + 1, what="all five processes")
    # the first clear period must pass before the cold figure is measured at all
    first = e.wait_for(lambda s: (s.get("damon_cold_bytes", target="rd") or 0) > 0, timeout=30, what="a cold figure")
    seen = [first]
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        seen.append(e.scrape())
        time.sleep(1.0)  # one scrape per aggregation, as Prometheus would
    truth_pss = sum(pss(p) for p in pids)
    assert abs(truth_pss - SIZE * MiB) <= OVERHEAD, truth_pss / MiB  # the kernel agrees: each page once
    for s in seen[1:]:
        resident = s.get("damon_resident_bytes", target="rd")
        ws = s.get("damon_working_set_bytes", target="rd")
        cold = s.get("damon_cold_bytes", target="rd")
        assert abs(resident - truth_pss) <= 0.10 * truth_pss, (resident / MiB, truth_pss / MiB)
        assert abs(ws - HOT * MiB) <= 0.20 * HOT * MiB + OVERHEAD, ws / MiB
        assert abs(cold - (SIZE - HOT) * MiB) <= 0.10 * (SIZE - HOT) * MiB, cold / MiB


@pytest.mark.slow
def test_pages_shared_with_another_target_count_by_share(tmp_path, exporter):
    """The same forked readers as two programs: the parent and two readers keep the
    workload's name (target a), two readers rename themselves (target b). Every page has
    five mappers, three in a and two in b: a holds three fifths of resident, working set and
    cold bytes, b two fifths, and the two add up to the pages once, as the kernel's Pss does."""
    name = f"dxsa{os.getpid() % 100000}"[:15]
    other = f"dxsb{os.getpid() % 100000}"[:15]
    binary = build_workload("workload.c", tmp_path, name)
    p = subprocess.Popen([binary, "--size", str(SIZE), "--hot", str(HOT), "--readers", str(READERS), "--reader-name", other,
                          "--renamed-readers", "2", "--no-tlb-flush", "--period-us", "20000"], stdout=subprocess.PIPE, text=True)
    try:
        ready = [json.loads(p.stdout.readline()[6:]) for _ in range(READERS + 1)]
        pids = [r["pid"] for r in ready]
        targets = f"  - name: a\n    match:\n      comm: [{name}]\n  - name: b\n    match:\n      comm: [{other}]\n"
        e = exporter("backend: clear_refs\n" + fast_config(targets, cold_age="6s", window="3s", sample="100ms",
                                                            aggregation="1s", update="1s"))
        e.wait_ready()
        e.wait_for(lambda s: s.get("damon_target_processes", target="a") == 3 and s.get("damon_target_processes", target="b") == 2,
                   what="three processes in a, two in b")
        e.wait_for(lambda s: (s.get("damon_cold_bytes", target="b") or 0) > 0, timeout=30, what="a cold figure")
        time.sleep(2.0)
        s = e.scrape()
        comm = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids}
        truth = {t: sum(pss(pid) for pid in pids if comm[pid] == c) for t, c in (("a", name), ("b", other))}
        for t, share in (("a", 3 / 5), ("b", 2 / 5)):
            resident = s.get("damon_resident_bytes", target=t)
            ws = s.get("damon_working_set_bytes", target=t)
            cold = s.get("damon_cold_bytes", target=t)
            detail = f"{t}: resident {resident / MiB:.1f} (Pss {truth[t] / MiB:.1f}), working set {ws / MiB:.1f}, cold {cold / MiB:.1f} MiB"
            assert abs(resident - truth[t]) <= 0.10 * truth[t], detail
            assert abs(ws - share * HOT * MiB) <= 0.20 * share * HOT * MiB + OVERHEAD, detail
            assert abs(cold - share * (SIZE - HOT) * MiB) <= 0.10 * share * (SIZE - HOT) * MiB, detail
        both = s.get("damon_resident_bytes", target="a") + s.get("damon_resident_bytes", target="b")
        assert abs(both - SIZE * MiB) <= 0.05 * SIZE * MiB + OVERHEAD, both / MiB  # the pages once
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


# -- PostgreSQL ----------------------------------------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def postgres():
    """A PostgreSQL 15 cluster of our own (its own data directory, port and socket), run as
    the ``postgres`` user, with 128 MB of shared buffers that its backends map."""
    if not (PG_BIN / "postgres").exists() or shutil.which("runuser") is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL 15 is needed (apt-get install postgresql-15; .ci/run installs it)")
        pytest.skip("no PostgreSQL 15 here")
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="dxpg"))  # pytest's tmp_path is root's only (0700)
    top.chmod(0o755)
    data = top / "pgdata"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    run = ["runuser", "-u", "postgres", "--"]
    subprocess.run(run + [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "--no-sync"], check=True,
                   capture_output=True)
    port = str(20000 + os.getpid() % 20000)
    server = subprocess.Popen(run + [str(PG_BIN / "postgres"), "-D", str(data), "-p", port, "-k", str(data),
                                     "-c", "shared_buffers=128MB", "-c", "listen_addresses="],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    psql = run + [str(PG_BIN / "psql"), "-h", str(data), "-p", port, "-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1"]
    deadline = time.monotonic() + 30
    while subprocess.run(psql + ["-c", "select 1"], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline and server.poll() is None, "postgres did not start"
        time.sleep(0.2)
    # fill the shared buffers: a table of ~60 MB, read by a few concurrent clients
    subprocess.run(psql + ["-c", "create table t as select g, repeat('x', 400) as pad from generate_series(1, 150000) g"],
                   check=True, capture_output=True)
    clients = [subprocess.Popen(psql + ["-c", "select count(*) from t, pg_sleep(0) ; select pg_sleep(600)"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(4)]
    yield server, str(data)
    for c in clients:
        c.kill()
        c.wait()
    server.terminate()
    server.wait(30)
    shutil.rmtree(top, ignore_errors=True)


def _tree(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            pass
    return out


@pytest.mark.slow
def test_postgres_resident_is_the_sum_of_its_processes_pss(postgres, exporter):
    server, data = postgres
    postmaster = int(subprocess.run(["pgrep", "-f", "-o", f"postgres -D {data}"], capture_output=True, text=True).stdout.split()[0])
    e = exporter("backend: clear_refs\n" + fast_config(
        f"  - name: pg\n    match:\n      cmdline: ['-D {data} ']\n    include_children: true\n",
        cold_age="6s", window="3s", sample="100ms", aggregation="1s", update="1s"))
    e.wait_ready()
    e.wait_for(lambda s: (s.get("damon_target_processes", target="pg") or 0) >= 6, what="postmaster, backends and clients' servers")
    # memory watched for less than working_set_window (3 s) is unknown, and all of it in the
    # working set's error, as memory watched for less than cold_age (6 s) is in the cold
    # error: judge from two aggregations past the longer
    since = time.time()
    e.wait_for(lambda s: (s.get("damon_target_last_aggregation_timestamp_seconds", target="pg") or 0) >= since + 6 + 2,
               what="cold_age past")
    for _ in range(5):
        before = sum(pss(p) for p in _tree(postmaster))
        s = e.wait_for(lambda s: s.get("damon_resident_bytes", target="pg") is not None, what="a figure")
        after = sum(pss(p) for p in _tree(postmaster))
        truth = (before + after) / 2
        resident = s.get("damon_resident_bytes", target="pg")
        rss = sum(int(next(l.split()[1] for l in Path(f"/proc/{p}/status").read_text().splitlines() if l.startswith("VmRSS:"))) * 1024
                  for p in _tree(postmaster))
        assert abs(resident - truth) <= 0.10 * truth, (resident / MiB, truth / MiB, rss / MiB)
        assert rss > 1.5 * truth  # the sum of RSS, what the engines used to report, is far off
        # shared_buffers sits in mappings mixing private and shared pages: scaling smaps'
        # counts from Rss to Pss can misplace some of them, and the error says how many
        ws, ws_err = s.get("damon_working_set_bytes", target="pg"), s.get("damon_working_set_error_bytes", target="pg")
        cold_err = s.get("damon_cold_error_bytes", target="pg")
        print(f"pg: resident {resident / MiB:.1f} MiB (Pss {truth / MiB:.1f}), working set {ws / MiB:.1f} ± {ws_err / MiB:.1f}, "
              f"cold ± {cold_err / MiB:.1f} MiB")
        mixed = sum(pss_of_mappings_with_shared_pages(p) for p in _tree(postmaster))
        print(f"pg: Pss of mappings with shared pages {mixed / MiB:.1f} MiB")
        # the errors come from shared pages only, so they stay within the mappings that hold
        # some (10%: the processes' memory moves between the reads, as for resident above)
        assert 0 < ws_err <= mixed + 0.10 * truth and 0 < cold_err <= mixed + 0.10 * truth, (ws_err, cold_err, mixed)
        time.sleep(1.0)
