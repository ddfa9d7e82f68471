"""The CPU budget may cost resolution in time, never the truth of the numbers: the
exporter service with the default ``cpu_budget`` (0.05) in the test guest, where page_idle
at 100 ms samples costs more than that, on one process of 512 MiB with 64 MiB hot. Every
scrape over a minute (after a 30 s warm-up) reads working set and cold bytes within 10% of
the truth. One boot, about two minutes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from . import harness
from .service_check import READERS_COLD_AGE, READERS_TIMING
from .tolerance import aggregations, allowed_misses, error_confined

pytestmark = [pytest.mark.vm, pytest.mark.slow]

MiB = 1 << 20
GUEST_TIMEOUT = 600


def boot_service(vm_kernel: Path, workload_binary: Path, tmp_path_factory: pytest.TempPathFactory, name: str,
                 *args: str) -> dict:
    """One guest boot running tests/vm/service_check.py with ``args``; its results."""
    shared = tmp_path_factory.mktemp(name)
    out = shared / "service.json"
    cmd = f"{sys.executable} -m tests.vm.service_check {' '.join(args)} --workload {workload_binary} --out {out}\n"
    run = harness.run_in_guest(cmd, kernel=vm_kernel, timeout=GUEST_TIMEOUT, shared_dir=shared)
    res = json.loads(out.read_text()) if out.exists() else {}
    if not res.get("scrapes"):
        pytest.fail(f"no scrapes; {run.describe()}\n{res.get('log', '')[-3000:]}", pytrace=False)
    return res


@pytest.fixture(scope="module")
def service(vm_kernel: Path, workload_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return boot_service(vm_kernel, workload_binary, tmp_path_factory, "vm-service")


def table(scrapes: list[dict]) -> str:
    return "\n".join(
        f"t={s['t']:5.1f} ws={s['working_set'] / MiB:6.1f} cold={s['cold'] / MiB:6.1f} "
        f"regions={s['regions']:.0f}/{s['regions_max']:.0f} si={s['sample_interval']:.3f} "
        f"ratio={s['budget_ratio']:.2f} err={s['working_set_error'] / MiB:.1f}/{s['cold_error'] / MiB:.1f}"
        for s in scrapes
    )


def test_every_scrape_within_ten_percent_under_the_default_budget(service: dict) -> None:
    truth = service["truth"]
    judged = [s for s in service["scrapes"] if s["judged"]]
    assert len(judged) >= 25, table(service["scrapes"])
    assert service["exporter_alive"], service["log"][-3000:]
    # within 10%, or within the error the exporter publishes with that aggregation, at all
    # but the misses tests/vm/tolerance.py allows; and the error confined to what the
    # samples leave unproven of the memory counted used as often (error_confined: with the
    # budget's few checks per window they prove less of it)
    aggs = aggregations(judged)
    k = allowed_misses(len(aggs))
    bad = [s for s in aggs
           if abs(s["working_set"] - truth["working_set"]) > 0.10 * truth["working_set"] + s["working_set_error"]
           or abs(s["cold"] - truth["cold"]) > 0.10 * truth["cold"] + s["cold_error"]]
    assert len(bad) <= k, f"{len(bad)} of {len(aggs)} aggregations off by more than 10% and their error:\n" + table(judged)
    wide = [s for s in aggs if not error_confined(s, truth["working_set"])]
    assert len(wide) <= k, f"{len(wide)} of {len(aggs)} aggregations with a wide error:\n" + table(judged)


def test_the_budget_acted_and_says_what_it_costs(service: dict) -> None:
    """The case of the issue: page_idle under emulation needs the budget; it spent time
    resolution, within the 4 s window (at most 400 ms samples), and the error estimate
    stayed confined to what its fewer samples leave unproven of the memory counted used."""
    judged = [s for s in service["scrapes"] if s["judged"]]
    assert "over CPU budget" in service["log"], service["log"][-3000:]
    assert max(s["sample_interval"] for s in service["scrapes"]) > 0.1
    assert all(s["sample_interval"] <= 0.4 + 1e-9 and s["aggregation_interval"] <= 2.0 + 1e-9 for s in judged)
    assert all(s["regions_max"] >= 40 for s in judged), table(judged)
    # and the error confined (error_confined), at all but the aggregations
    # tests/vm/tolerance.py allows
    aggs = aggregations(judged)
    large = [s for s in aggs if not error_confined(s, service["truth"]["working_set"])]
    assert len(large) <= allowed_misses(len(aggs)), table(judged)


# -- kernel DAMON at its own defaults (issue 19) ---------------------------------------------


@pytest.fixture(scope="module")
def damon_sysfs_service(vm_kernel: Path, workload_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The service with ``backend: damon_sysfs`` and no ``monitoring:`` section (5 ms / 2 s,
    10..100 regions, the default budget acting on the kdamond's sampling), cold_age 8 s,
    working_set_window 3 s, scraped every 5 s for a minute after 30 s; then kernel DAMON
    alone at those defaults on the same process, for as long. One boot, about three minutes."""
    return boot_service(vm_kernel, workload_binary, tmp_path_factory, "vm-service-damon", "--backend", "damon_sysfs")


def test_kernel_damon_at_its_defaults_every_scrape_within_ten_percent(damon_sysfs_service: dict) -> None:
    res = damon_sysfs_service
    truth = res["truth"]
    judged = [s for s in res["scrapes"] if s["judged"]]
    assert len(judged) >= 10 and res["exporter_alive"], table(res["scrapes"]) + res["log"][-3000:]
    # within 10% or the error published with the aggregation, and that error confined
    # (error_confined), at all but the misses tests/vm/tolerance.py allows. Judged from 30 s:
    # before, the kernel may still be splitting its way to the hot edge from its first regions
    aggs = aggregations(judged)
    k = allowed_misses(len(aggs))
    bad = [s for s in aggs
           if abs(s["working_set"] - truth["working_set"]) > 0.10 * truth["working_set"] + s["working_set_error"]
           or abs(s["cold"] - truth["cold"]) > 0.10 * truth["cold"] + s["cold_error"]]
    assert len(bad) <= k, table(judged)
    wide = [s for s in aggs if not error_confined(s, truth["working_set"])]
    assert len(wide) <= k, table(judged)


def test_kernel_damon_service_costs_at_most_twice_kernel_damon_alone(damon_sysfs_service: dict) -> None:
    """The whole service (sampler, HTTP, discovery: the process' CPU) plus its kdamond,
    against a kdamond alone at the defaults for as long. The budget counts the kdamond too,
    so under emulation it slows the kdamond's sampling and the service costs less than the
    kernel alone at the defaults (bench/kernel_damon_compare.py compares at equal
    attributes)."""
    cpu, alone = damon_sysfs_service["cpu"], damon_sysfs_service["kdamond_alone"]
    assert cpu["kdamond"] > 0 and alone > 0, (cpu, alone)
    total = cpu["exporter"] + cpu["kdamond"]
    print(f"damon_sysfs service: exporter {cpu['exporter']:.2f} s + kdamond {cpu['kdamond']:.2f} s "
          f"over {cpu['seconds']:.0f} s; kdamond alone {alone:.2f} s: {total / alone:.2f}x")
    assert total <= 2 * alone, (cpu, alone)


def test_no_kdamond_left_after_the_service_exits(damon_sysfs_service: dict) -> None:
    assert damon_sysfs_service["kdamonds_after_exit"]["nr_kdamonds"] == "0", damon_sysfs_service["kdamonds_after_exit"]
    assert "kernel DAMON given back: kdamond off, nr_kdamonds 0" in damon_sysfs_service["log"]


# -- forked readers through the service (issue 18) -------------------------------------------


# damon_sysfs: two readers' cold regions may reach over the hot edge and catch a hit each
# at the same aggregation; the union of views judges every such view against the sampling
# model (exporter/summary/sharing.py, _unexplained_hits) rather than taking it whole.
@pytest.fixture(scope="module", params=["page_idle", "damon_sysfs"])
def readers_service(request: pytest.FixtureRequest, vm_kernel: Path, workload_binary: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The service at the backend's own defaults on five forked processes sharing 128 MiB
    copy-on-write (16 MiB read by four of them), one target, cold_age 30 s, window 20 s,
    scraped every 5 s for 90 s after 45 s (READERS_TIMING). One boot per backend, about
    three and a half minutes."""
    backend = request.param
    res = boot_service(vm_kernel, workload_binary, tmp_path_factory, f"vm-readers-{backend}", "--readers", "--backend", backend)
    res["backend"] = backend
    return res


def in_band(s: dict, truth: dict) -> bool:
    """A scrape of the forked readers whose published figures bracket the truth, give or
    take 10%: working set within 10% plus its error of the 16 MiB read (above: plus what
    else the five hold by Pss, their code, stack and libc), cold likewise of the rest."""
    other = s["pss"] - truth["buffer"]
    ws_slack = 0.10 * truth["working_set"] + s["working_set_error"]
    return (truth["working_set"] - ws_slack <= s["working_set"] <= truth["working_set"] + other + ws_slack
            and abs(s["cold"] - truth["cold"]) <= 0.10 * truth["cold"] + s["cold_error"])


READERS_PROCESSES = 5


def resolution(s: dict, truth: dict) -> float:
    """The widest doubt the regions of a scrape can justify at the hot edge: each of the
    five processes holds about ``regions / 5`` regions over the shared buffer, so where their
    views of the hot edge disagree (page_idle publishes that spread; kernel DAMON the
    union's doubt) they disagree over at most the straddling region and its neighbour:
    two regions' worth of the buffer (each page counted once, by share). Beside it the error
    holds what the samples leave unproven of the memory counted used (error_confined)."""
    return 2 * truth["buffer"] * READERS_PROCESSES / max(1.0, s["regions"])


def test_forked_readers_through_the_service_count_each_page_once(readers_service: dict) -> None:
    """After warm-up: resident within 10% of the five processes' summed Pss at every
    scrape; working set and cold bytes bracketed by their published errors (give or take
    10%) at all but the aggregations the binomial allowance gives; and the error no wider
    than the regions' resolution allows, as often (:func:`resolution`)."""
    res = readers_service
    truth = res["truth"]
    judged = [s for s in res["scrapes"] if s["judged"]]
    assert len(judged) >= 10 and res["exporter_alive"], table(res["scrapes"]) + res["log"][-3000:]
    print(f"{res['backend']} service, forked readers:\n{table(judged)}")
    for s in judged:
        assert s["rss"] > 4 * truth["buffer"], "the pages were not shared"
        assert abs(s["resident"] - s["pss"]) <= 0.10 * s["pss"], (s["resident"] / MiB, s["pss"] / MiB, table(judged))
    # Cold bytes are judged where the exporter says it knows them. Knowing needs cold_age
    # of watching by regions that already isolate the idle part: the warm-up is when they
    # do (the working set is judged from then), so from warm-up + cold_age every
    # aggregation is judged; before, a wide cold error is the truth about what it knows.
    # On page_idle the cold error holds the processes' disagreement over the hot edge
    # (the working set's error), a sampling outcome like any other: an aggregation after
    # warm-up + cold_age that does not know is a miss under the same binomial allowance
    known = [s for s in judged if s["cold_error"] < 0.5 * truth["cold"]]
    settled = READERS_TIMING[0] + READERS_COLD_AGE
    aggs = aggregations([s for s in judged if s in known or s["t"] >= settled])
    assert len(aggs) >= 4, table(judged)
    off = [s for s in aggs if s not in known or not in_band(s, truth)]
    assert len(off) <= allowed_misses(len(aggs)), f"{len(off)} of {len(aggs)} aggregations off:\n{table(judged)}"
    wide = [s for s in aggs if s["working_set_error"] > resolution(s, truth) + s["working_set"]]
    assert len(wide) <= allowed_misses(len(aggs)), f"{len(wide)} of {len(aggs)} with a wide error:\n{table(judged)}"
