"""The physical reference and real programs, in one guest boot (tests/vm/real_checks.py).

The reference (tests/vm/physical_reference.py) judges the engines on real servers, so it is
checked first on processes whose touched set is known to the page: exact equality, no
tolerance (every page of the buffer is present and either written each pass or never).
Those two checks run in CI.

Real servers run with ``DAMON_EXPORTER_REAL_PROGRAMS=1`` (their setup and two engines'
runs under emulation add about ten minutes, more than CI's budget): memcached with a
scattered hot set, and PostgreSQL with its hot buffers scattered over the shared memory
every backend maps. Every engine's scrapes are tabulated on stdout (``-s``) against the
references taken before and after its run, and judged as issue 32 asks:

- working set and cold bytes within 15% of the reference at the median scrape;
- the reference inside the published interval at all but the misses tests/vm/tolerance.py
  allows among the scrapes (its stated false-failure rate; scrapes are treated as
  independent draws, which they are not quite: windows overlap);
- resident bytes within 5% of the reference's (frames by the processes' share).

page_idle meets that on memcached with page windows (the used share of each region read from
random pages, exporter/engines/page_idle/windows.py). Its PostgreSQL check and kernel
DAMON's two are expected failures: kernel DAMON has no page windows, and on a scattered heap
one sampled page per region and interval says whether a page of the region was used, not
how many.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import pytest

from . import harness
from .tolerance import allowed_misses

pytestmark = [pytest.mark.vm, pytest.mark.slow]

MiB = 1 << 20
PAGE = 4096
#: folios a CPU holds off the LRU lists before it drains them into one (PAGEVEC_SIZE: 31 in
#: recent kernels, 15 before), for the guest's 2 vCPUs and the two batches a fresh anonymous
#: page can wait in (lru_add, activate): the pages page_idle may refuse to mark at any moment
LRU_BATCH_PAGES = 31 * 2 * 2
GUEST_TIMEOUT = 1800
SCRAPES = 12
REAL_PROGRAMS = "DAMON_EXPORTER_REAL_PROGRAMS"
#: issue 32: what the engines get wrong on a scattered heap today
SCATTERED = pytest.mark.xfail(strict=True, reason="issue 32: on PostgreSQL page_idle's medians are within 15% but its "
                              "true working set moves by a third between references taken minutes apart, and the "
                              "published interval holds their mean at fewer scrapes than the model allows; kernel "
                              "DAMON has no page windows")


@pytest.fixture(scope="session")
def real(vm_kernel: Path, workload_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    shared = tmp_path_factory.mktemp("vm-real")
    out = shared / "results.json"
    checks = ["reference_exact", "reference_readers"]
    if os.environ.get(REAL_PROGRAMS):
        checks += ["memcached", "postgres"]
    cmd = f"{sys.executable} -m tests.vm.real_checks --workload {workload_binary} --out {out} {' '.join(checks)}\n"
    run = harness.run_in_guest(cmd, kernel=vm_kernel, timeout=GUEST_TIMEOUT, shared_dir=shared)
    results = json.loads(out.read_text()) if out.exists() else {}
    return {"run": run, "results": results}


def _check(real: dict, name: str) -> dict:
    res = real["results"].get(name)
    assert res is not None, real["run"].describe()
    assert "error" not in res, res["error"]
    return res


def test_reference_exact_on_a_known_touched_set(real: dict) -> None:
    res = _check(real, "reference_exact")
    truth, buf = res["truth"], res["buffer"]
    assert buf["resident"] == truth["resident"], res
    assert buf["working_set"] == truth["working_set"], res
    # a page the kernel refuses to mark is counted apart: one faulted in lately may still sit
    # in a per-CPU LRU batch (not on an LRU list yet), at most LRU_BATCH_PAGES of them
    assert buf["untracked"] <= LRU_BATCH_PAGES * PAGE, res
    assert buf["cold"] + buf["untracked"] == truth["resident"] - truth["working_set"], res
    assert buf["resident_share"] == truth["resident"], res
    # the whole process holds the buffer and more (code, stack, libc), all of it judged
    whole = res["whole"]
    assert whole["resident"] >= truth["resident"] and whole["working_set"] >= truth["working_set"], res
    assert whole["working_set"] - truth["working_set"] < 8 * MiB, res


def test_reference_counts_shared_frames_once(real: dict) -> None:
    res = _check(real, "reference_readers")
    truth, buf = res["truth"], res["buffer"]
    assert res["processes"] == 4
    assert buf["resident"] == truth["resident"], res
    assert buf["working_set"] == truth["working_set"], res
    assert buf["resident_share"] == truth["resident"], res


def _table(res: dict, engine: str) -> tuple[list[dict], dict]:
    """The engine's scrapes, and the references taken just before and after its run."""
    order = list(res["engines"])
    i = order.index(engine)
    before, after = res["references"][i], res["references"][i + 1]
    ref = {k: (before[k] + after[k]) / 2 for k in ("resident_share", "working_set_share")}
    rows = res["engines"][engine]
    print(f"\n{engine}: reference resident {ref['resident_share'] / MiB:.1f} MiB, working set "
          f"{before['working_set_share'] / MiB:.1f} / {after['working_set_share'] / MiB:.1f} MiB (before / after)")
    for r in rows:
        print(f"  t={r['t']:6.1f}  resident {r['resident'] / MiB:6.1f}  working set {r['working_set'] / MiB:6.1f} "
              f"± {r['working_set_error'] / MiB:5.1f}  cold {r['cold'] / MiB:6.1f} ± {r['cold_error'] / MiB:5.1f}"
              f"  regions {r['nr_regions']}  window: {r.get('window_strata', 0)} strata, {r.get('window_pages', 0)} pages, "
              f"{r.get('window_unknown', 0) / MiB:.1f} MiB unknown")
    return rows, ref


def _judge(rows: list[dict], ref: dict) -> None:
    ws_ref = ref["working_set_share"]
    cold_ref = ref["resident_share"] - ws_ref
    assert len(rows) == SCRAPES
    ws = statistics.median(r["working_set"] for r in rows)
    cold = statistics.median(r["cold"] for r in rows)
    resident = statistics.median(r["resident"] for r in rows)
    detail = f"median ws {ws / MiB:.1f} (ref {ws_ref / MiB:.1f}), cold {cold / MiB:.1f} (ref {cold_ref / MiB:.1f})"
    assert abs(ws - ws_ref) <= 0.15 * ws_ref, detail
    assert abs(cold - cold_ref) <= 0.15 * cold_ref, detail
    assert abs(resident - ref["resident_share"]) <= 0.05 * ref["resident_share"], (resident / MiB, ref)
    ws_misses = sum(abs(r["working_set"] - ws_ref) > r["working_set_error"] for r in rows)
    cold_misses = sum(abs(r["cold"] - cold_ref) > r["cold_error"] for r in rows)
    k = allowed_misses(len(rows))
    assert ws_misses <= k and cold_misses <= k, (ws_misses, cold_misses, detail)


def _real(real: dict, name: str) -> dict:
    if not os.environ.get(REAL_PROGRAMS):
        pytest.skip(f"set {REAL_PROGRAMS}=1 (adds about ten minutes to the boot)")
    return _check(real, name)


#: kernel DAMON's figure swings over most of its range from one summary to the next on a
#: scattered heap; the median of twelve can land within 15% by chance (one run in three did)
SWINGS = pytest.mark.xfail(strict=False, reason="issue 32: kernel DAMON has no page windows; on a scattered heap "
                           "its regions are hit or missed whole, and its median lands near the truth only by chance")


@pytest.mark.parametrize("engine", ["page_idle", pytest.param("damon_sysfs", marks=SWINGS)])
def test_memcached_against_the_reference(real: dict, engine: str) -> None:
    _judge(*_table(_real(real, "memcached"), engine))


@SCATTERED
@pytest.mark.parametrize("engine", ["page_idle", "damon_sysfs"])
def test_postgres_against_the_reference(real: dict, engine: str) -> None:
    _judge(*_table(_real(real, "postgres"), engine))


@pytest.mark.parametrize("server", ["memcached"])
def test_damo_beside_the_engines(real: dict, server: str) -> None:
    """damo, the kernel's own user-space tool, on the same server in the same boot: its
    working set (regions with any access over one aggregation of the window's length)
    against the reference taken right after it. A peer, printed for docs/accuracy.md, not
    judged: it is region-based like kernel DAMON's engine. (damo 2.5 takes one pid, so the
    multi-process PostgreSQL is not run.)"""
    from .real_checks import DAMO_SNAPSHOTS

    res = _real(real, server)
    damo, ref = res["damo"], res["damo_reference"]
    assert "error" not in damo, damo["error"]
    wss = damo["working_set"]
    print(f"\ndamo on {server}: reference working set {ref['working_set_share'] / MiB:.1f} MiB "
          f"(resident {ref['resident_share'] / MiB:.1f}); damo wss per snapshot: "
          + ", ".join(f"{w / MiB:.1f}" for w in wss) + f" MiB, median {statistics.median(wss) / MiB:.1f}")
    assert len(wss) == DAMO_SNAPSHOTS - 1
