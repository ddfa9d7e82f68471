"""The damon_sysfs engine against a fake DAMON sysfs tree (tests/engines/fake_damon.py)."""

from __future__ import annotations

import json
import os
import time
import subprocess
from pathlib import Path

import pytest

from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import TargetSpec
from exporter.engines.damon_sysfs.engine import DamonSysfsEngine, OwnershipLost
from exporter.engines.damon_sysfs.ownership import Marker, available
from exporter.model.errors import BackendUnavailable
from exporter.model.process import ProcessRef
from exporter.procfs.io import PosixIO
from exporter.procfs.parsers import read_stat

from .fake_damon import FakeDamon

MiB = 1 << 20
ATTRS = MonitoringAttrs(sample_interval=0.005, aggregation_interval=1.0, update_interval=10.0, min_regions=10, max_regions=100)
RELEASE = "6.12.117"


@pytest.fixture
def procs():
    """Two live processes (sleep) to monitor; killed afterwards."""
    ps = [subprocess.Popen(["sleep", "300"]) for _ in range(3)]
    yield ps
    for p in ps:
        p.kill()
        p.wait()


def ref(p: subprocess.Popen) -> ProcessRef:
    return ProcessRef(p.pid, read_stat(PosixIO(), "/proc", p.pid, "").start_time)


def stack_of(pid: int) -> tuple[int, int]:
    for line in open(f"/proc/{pid}/maps"):
        if line.rstrip().endswith("[stack]"):
            a, b = line.split()[0].split("-")
            return int(a, 16), int(b, 16)
    raise AssertionError("no stack")


def engine(fake: FakeDamon, tmp_path: Path, **kw) -> DamonSysfsEngine:
    e = DamonSysfsEngine(ATTRS, sys_root=str(fake.sys_root), io=fake, state_dir=str(tmp_path / "run"),
                         release=RELEASE, **kw)
    e.sleep = lambda s: None
    return e


def test_available_reasons(tmp_path):
    nowhere = tmp_path / "none"
    ok, why = available(sys_root=str(nowhere), state_dir=str(tmp_path / "run"), release=RELEASE)
    assert (ok, why) == (False, f"{nowhere}/kernel/mm/damon/admin/kdamonds/nr_kdamonds does not exist (kernel built without CONFIG_DAMON_SYSFS)")
    fake = FakeDamon(tmp_path)
    nr = f"{fake.kdamonds}/nr_kdamonds"
    assert available(sys_root=str(fake.sys_root), io=fake, state_dir=str(tmp_path / "run"), release=RELEASE) == (
        True, f"{nr} is 0: kernel DAMON is free")
    assert available(sys_root=str(fake.sys_root), io=fake, release="6.1.0-13-amd64") == (
        False, "Linux 6.1.0-13-amd64 is older than 6.6: its DAMON sysfs has no target filter to attribute "
               "regions to processes (6.1 cannot read regions back at all)")
    busy = FakeDamon(tmp_path / "busy", nr_kdamonds=1)
    ok, why = available(sys_root=str(busy.sys_root), io=busy, state_dir=str(tmp_path / "run"), release=RELEASE)
    assert not ok
    assert why == (f"{busy.kdamonds}/nr_kdamonds is 1: kernel DAMON is in use by someone else (no marker of a "
                   "previous damon-exporter); it is only used when no kdamond is configured")


def test_refuses_when_busy_without_writing(tmp_path):
    fake = FakeDamon(tmp_path, nr_kdamonds=1)
    with pytest.raises(BackendUnavailable) as e:
        engine(fake, tmp_path)
    assert str(e.value).startswith(f"damon_sysfs unavailable: {fake.kdamonds}/nr_kdamonds is 1: kernel DAMON is in use by someone else")
    assert fake.writes == []
    assert not (tmp_path / "run").exists()


def test_lifecycle_and_attribution_of_overlapping_ranges(tmp_path, procs):
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path)
    run = tmp_path / "run"
    marker = json.loads((run / "damon_sysfs.json").read_text())
    assert marker["exporter_pid"] == os.getpid() and marker["kdamond_pid"] == -1
    assert fake.read_value("admin/kdamonds/nr_kdamonds") == "1"
    assert fake.read_value("admin/kdamonds/0/state") == "off"
    a, b = procs[0], procs[1]
    # the same address range in both processes: only the target filter tells them apart
    lo, hi = stack_of(a.pid)
    fake.regions[a.pid] = [(lo, hi, 200, 0)]
    fake.regions[b.pid] = [(lo, lo + 4096, 0, 7), (lo + 4096, hi, 0, 3)]
    e.set_targets([TargetSpec("A", (ref(a),)), TargetSpec("B", (ref(b),))])
    agg = e.step()
    assert fake.read_value("admin/kdamonds/0/state") == "on"
    kd_pid = int(fake.read_value("admin/kdamonds/0/pid"))
    assert e.kdamond_pid == kd_pid
    assert json.loads((run / "damon_sysfs.json").read_text())["kdamond_pid"] == kd_pid
    ctx = "admin/kdamonds/0/contexts/0"
    assert fake.read_value(f"{ctx}/monitoring_attrs/intervals/sample_us") == "5000"
    assert fake.read_value(f"{ctx}/monitoring_attrs/intervals/aggr_us") == "1000000"
    # 2 targets x 10, divided between their 2 processes: the kernel starts each with that many
    assert fake.read_value(f"{ctx}/monitoring_attrs/nr_regions/min") == "10"
    assert fake.read_value(f"{ctx}/monitoring_attrs/nr_regions/max") == "200"
    assert [fake.read_value(f"{ctx}/schemes/{i}/filters/0/damon_target_idx") for i in (0, 1)] == ["0", "1"]
    assert fake.read_value(f"{ctx}/schemes/1/filters/0/matching") == "N"
    ta, tb = agg.targets
    assert ta.pids == (a.pid,) and tb.pids == (b.pid,)
    assert [(r.pid, r.start, r.end, r.nr_accesses, r.nr_checks) for r in ta.regions] == [(a.pid, lo, hi, 200, 200)]
    # the ages were capped: the slot was given to this process less than one aggregation ago
    assert [(r.pid, r.nr_accesses, r.age, r.idle_seconds) for r in tb.regions] == [(b.pid, 0, 0, 0.0), (b.pid, 0, 0, 0.0)]
    # A's stack is resident; in B the same addresses are B's only where B maps them (its own
    # stack lies elsewhere): each process is weighed by its own page tables
    assert ta.regions[0].resident_bytes > 0
    b_maps = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in open(f"/proc/{b.pid}/maps")]
    mapped_in_b = sum(max(0, min(e_, hi) - max(s_, lo)) for s_, e_ in b_maps)
    assert (sum(r.resident_bytes for r in tb.regions) > 0) == (mapped_in_b > 0)
    assert sum(r.resident_bytes for r in tb.regions) <= mapped_in_b
    e.close()
    assert fake.read_value("admin/kdamonds/nr_kdamonds") == "0"
    assert fake.commands == ["on", "update_schemes_tried_regions", "off"]
    assert not (run / "damon_sysfs.json").exists()


def test_ages_in_seconds_after_the_cap_lifts(tmp_path, procs):
    clock = [100.0]
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path, clock=lambda: clock[0])
    p = procs[0]
    lo, hi = stack_of(p.pid)
    fake.regions[p.pid] = [(lo, hi, 0, 30)]
    e.set_targets([TargetSpec("A", (ref(p),))])
    e.step()
    clock[0] += 12.5
    r = e.step().targets[0].regions[0]
    assert (r.age, r.idle_seconds) == (12, 12.0)
    clock[0] += 100
    r = e.step().targets[0].regions[0]
    assert (r.age, r.idle_seconds) == (30, 30.0)
    e.close()


def test_idle_time_survives_the_kernels_age_truncation(tmp_path, procs):
    """Beside a hot edge the kernel keeps merging age-0 slivers into an idle region and
    truncates the weighted age back to 0 (seen in the guest): read at every aggregation, the
    region's idle time still grows with the time it has gone unaccessed."""
    clock = [100.0]
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path, clock=lambda: clock[0])
    p = procs[0]
    lo, hi = stack_of(p.pid)
    mid = lo + (hi - lo) // 2 // 4096 * 4096
    hot_n = ATTRS.max_nr_accesses  # every sample of the hot half saw an access
    fake.regions[p.pid] = [(lo, mid, hot_n, 0), (mid, hi, hot_n, 0)]
    e.set_targets([TargetSpec("A", (ref(p),))])
    e.step()
    aggr = ATTRS.aggregation_interval
    for _ in range(10):
        clock[0] += aggr
        fake.regions[p.pid] = [(lo, mid, 0, 0), (mid, hi, hot_n, 0)]  # the kernel's age stays 0
        idle, hot = e.step().targets[0].regions
    assert idle.idle_seconds == pytest.approx(10 * aggr) and hot.idle_seconds == 0.0
    # a sliver of the hot region split off: its addresses were accessed one aggregation ago
    clock[0] += aggr
    edge = mid + 4096 * 4
    fake.regions[p.pid] = [(lo, edge, 0, 0), (edge, hi, hot_n, 0)]
    idle, _ = e.step().targets[0].regions
    small = (edge - mid) / (edge - lo)
    assert idle.idle_seconds == pytest.approx(11 * aggr * (1 - small) + aggr * small)
    # one sample of the 200 of an aggregation reaching a hot page at the region's edge
    # brings only that share of it to now, not the whole region
    before = idle.idle_seconds
    clock[0] += aggr
    fake.regions[p.pid] = [(lo, edge, 1, 0), (edge, hi, hot_n, 0)]
    touched, _ = e.step().targets[0].regions
    assert touched.idle_seconds == 0.0  # seen accessed in this aggregation
    clock[0] += aggr
    fake.regions[p.pid] = [(lo, edge, 0, 0), (edge, hi, hot_n, 0)]
    idle, _ = e.step().targets[0].regions
    share = 1 / ATTRS.max_nr_accesses
    assert idle.idle_seconds == pytest.approx((before + aggr) * (1 - share) + aggr)
    e.close()


def test_idle_time_survives_the_budget_changing_the_intervals(tmp_path, procs):
    """The first aggregation after the intervals change ends the old one's remainder plus a
    new one (18 s after a change from 6.7 s to 10 s in the guest): the idle time carried per
    address must bridge it, not fall back to the kernel's truncated age. A gap longer than a
    few aggregations is not bridged."""
    clock = [100.0]
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path, clock=lambda: clock[0])
    p = procs[0]
    lo, hi = stack_of(p.pid)
    fake.regions[p.pid] = [(lo, hi, 0, 0)]  # the kernel's age stays 0
    e.set_targets([TargetSpec("A", (ref(p),))])
    e.step()
    for _ in range(10):
        clock[0] += 1.0
        e.step()
    e.set_attrs(ATTRS.with_changes(aggregation_interval=2.0))
    clock[0] += 3.5  # 1.5 s of the old interval and 2 s of the new one
    r = e.step().targets[0].regions[0]
    assert r.idle_seconds == pytest.approx(13.5)
    clock[0] += 2.0 * 5  # four updates missed
    r = e.step().targets[0].regions[0]
    assert r.idle_seconds == 0.0  # only the kernel's age (0) knows
    e.close()


def test_process_churn_never_commits_a_dead_pid(tmp_path, procs):
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path)
    a, b, c = procs
    refs = [ref(x) for x in procs]
    e.set_targets([TargetSpec("T", tuple(refs[:2]))])
    e.step()
    ctx = "admin/kdamonds/0/contexts/0/targets"
    assert [fake.read_value(f"{ctx}/{i}/pid_target") for i in (0, 1)] == [str(a.pid), str(b.pid)]
    a.kill()
    a.wait()
    e.step()  # a exited: nothing to commit, the kernel target of a dead process costs nothing
    assert fake.commands.count("commit") == 0
    e.set_targets([TargetSpec("T", (refs[1], refs[2]))])  # c arrives
    agg = e.step()
    assert fake.commands.count("commit") == 1
    assert fake.read_value("admin/kdamonds/0/state") == "on"  # a dead pid would have stopped it
    assert sorted(fake.read_value(f"{ctx}/{i}/pid_target") for i in (0, 1)) == sorted([str(b.pid), str(c.pid)])
    assert agg.targets[0].pids == tuple(sorted([b.pid, c.pid]))
    assert e.live_processes(("T", ())) == 2
    e.close()


def test_kdamond_that_stopped_by_itself_is_restarted(tmp_path, procs):
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path)
    e.set_targets([TargetSpec("T", (ref(procs[0]),))])
    e.step()
    first = e.kdamond_pid
    fake.kill_kdamond()
    e.step()
    assert fake.read_value("admin/kdamonds/0/state") == "on"
    assert e.kdamond_pid != first and e.kdamond_pid == int(fake.read_value("admin/kdamonds/0/pid"))
    e.close()


@pytest.mark.parametrize("change, why", [
    ("nr", "nr_kdamonds is 2; the exporter created 1"),
    ("restart", "kdamond 0 now runs as pid 1002, not 1001"),
])
def test_ownership_lost(tmp_path, procs, change, why):
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path)
    e.set_targets([TargetSpec("T", (ref(procs[0]),))])
    e.step()
    if change == "nr":
        fake.kill_kdamond()
        FakeDamon.write(fake, str(fake.kdamonds / "nr_kdamonds"), 2)
    else:
        fake.restart_kdamond()
    before = len(fake.writes)
    with pytest.raises(OwnershipLost) as exc:
        e.step()
    assert str(exc.value) == f"kernel DAMON changed under the exporter ({why}); leaving it alone"
    e.close()
    assert len(fake.writes) == before  # not one write after the loss
    assert not (tmp_path / "run" / "damon_sysfs.json").exists()
    assert dict(e.stats().errors_total) == {"damon_sysfs": 1}


def test_missing_kernel_features_refuse_and_clean_up(tmp_path):
    for kw, why in (
        ({"target_filter": False}, "filters/0/damon_target_idx does not exist (Linux older than 6.6: no DAMOS target filter to attribute regions to processes)"),
        ({"tried_regions": False}, "schemes/0/tried_regions does not exist (Linux older than 6.2: regions cannot be read back)"),
    ):
        d = tmp_path / str(len(why))
        fake = FakeDamon(d, **kw)
        with pytest.raises(BackendUnavailable) as e:
            engine(fake, d)
        assert str(e.value).startswith("damon_sysfs unavailable: ") and str(e.value).endswith(why)
        assert fake.read_value("admin/kdamonds/nr_kdamonds") == "0"
        assert not (d / "run" / "damon_sysfs.json").exists()


def _dead_pid() -> tuple[int, int]:
    p = subprocess.Popen(["true"])
    st = read_stat(PosixIO(), "/proc", p.pid, "").start_time
    p.wait()
    return p.pid, st


def test_crash_leftover_is_reclaimed(tmp_path, procs):
    fake = FakeDamon(tmp_path)
    run = tmp_path / "run"
    e = engine(fake, tmp_path)
    e.set_targets([TargetSpec("T", (ref(procs[0]),))])
    e.step()
    # the exporter is SIGKILLed: no close; its marker now names a process that is gone
    m = Marker.load(str(run))
    m.exporter_pid, m.exporter_start_time = _dead_pid()
    m.save(str(run))
    ok, why = available(sys_root=str(fake.sys_root), io=fake, state_dir=str(run), release=RELEASE)
    assert ok and why.startswith(f"{fake.kdamonds}/nr_kdamonds is 1, a leftover of damon-exporter pid {m.exporter_pid}, which exited")
    e2 = engine(fake, tmp_path)
    assert fake.commands[-1] == "off"  # the leftover was turned off, then recreated
    assert Marker.load(str(run)).exporter_pid == os.getpid()
    e2.close()
    assert fake.read_value("admin/kdamonds/nr_kdamonds") == "0"


def test_leftover_of_a_live_exporter_or_another_thread_is_not_reclaimed(tmp_path, procs):
    fake = FakeDamon(tmp_path)
    run = str(tmp_path / "run")
    e = engine(fake, tmp_path)
    e.set_targets([TargetSpec("T", (ref(procs[0]),))])
    e.step()
    ok, why = available(sys_root=str(fake.sys_root), io=fake, state_dir=run, release=RELEASE)
    assert not ok and f"(it is in use by damon-exporter pid {os.getpid()})" in why
    m = Marker.load(run)
    m.exporter_pid, m.exporter_start_time = _dead_pid()
    m.save(run)
    fake.restart_kdamond()  # someone else took it over after the crash
    ok, why = available(sys_root=str(fake.sys_root), io=fake, state_dir=run, release=RELEASE)
    assert not ok and "(kdamond 0 runs as pid 1002, not the pid 1001 damon-exporter recorded)" in why


def test_process_bound_is_a_clear_error(tmp_path, procs):
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path, max_processes=2)
    e.set_targets([TargetSpec("T", tuple(ref(p) for p in procs))])
    agg = e.step()
    t = agg.targets[0]
    assert len(t.pids) == 2
    assert t.errors == (f"pid {procs[2].pid}: not monitored: damon_sysfs monitors at most 2 processes (one DAMON target and scheme each)",)
    assert dict(e.stats().errors_total) == {"limit": 1}
    e.close()


def test_busy_update_is_retried(tmp_path, procs):
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path)
    e.set_targets([TargetSpec("T", (ref(procs[0]),))])
    fake.busy_updates = 1
    assert e.step() is None
    assert e.step() is not None
    assert dict(e.stats().errors_total) == {"damon_sysfs": 1}
    e.close()


def test_attrs_and_region_caps_are_committed(tmp_path, procs):
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path)
    e.set_targets([TargetSpec("T", (ref(procs[0]),))])
    e.step()
    e.set_attrs(ATTRS.with_changes(sample_interval=0.01, aggregation_interval=2.0))
    e.set_region_cap(("T", ()), 40)
    e.step()
    ctx = "admin/kdamonds/0/contexts/0/monitoring_attrs"
    assert fake.read_value(f"{ctx}/intervals/sample_us") == "10000"
    assert fake.read_value(f"{ctx}/intervals/aggr_us") == "2000000"
    assert fake.read_value(f"{ctx}/nr_regions/max") == "40"
    assert e.region_cap(("T", ())) == 40
    assert fake.commands.count("commit") == 1
    e.close()


def test_the_kernel_keeps_room_to_split_every_process_of_a_target(tmp_path, procs):
    """The kernel starts each process with ``min_nr_regions`` regions and stops splitting
    the whole context past ``max_nr_regions / 2``: a target's minimum is divided among its
    processes (never below the kernel's 3), and its cap, the budget's included, leaves 20 per
    process."""
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path)
    key = ("T", ())
    e.set_targets([TargetSpec("T", tuple(ref(p) for p in procs))])
    e.step()
    ctx = "admin/kdamonds/0/contexts/0/monitoring_attrs/nr_regions"
    assert (fake.read_value(f"{ctx}/min"), fake.read_value(f"{ctx}/max")) == ("4", "100")  # ceil(10 / 3)
    e.set_region_cap(key, 25)
    e.step()
    assert (fake.read_value(f"{ctx}/min"), fake.read_value(f"{ctx}/max")) == ("4", "60")
    assert e.region_cap(key) == 60
    e.set_attrs(ATTRS.with_changes(min_regions=3))
    e.step()
    assert fake.read_value(f"{ctx}/min") == "3"  # not 1: damon_set_attrs() refuses fewer than 3
    e.close()


def test_no_processes_no_kdamond(tmp_path):
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path)
    e.set_targets([TargetSpec("T", (ProcessRef(*_dead_pid()),))])
    agg = e.step()
    assert agg.targets[0].pids == () and agg.targets[0].regions == ()
    assert fake.commands == []
    e.close()
    assert fake.commands == [] and fake.read_value("admin/kdamonds/nr_kdamonds") == "0"


def test_an_update_that_lists_no_regions_at_all_is_no_aggregation(tmp_path, procs):
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path)
    e.set_targets([TargetSpec("T", (ref(procs[0]),))])
    fake.regions[procs[0].pid] = []
    assert e.step() is None
    del fake.regions[procs[0].pid]
    assert len(e.step().targets[0].regions) == 1
    e.close()


def test_kdamond_cpu_is_counted_across_restarts(tmp_path, procs, monkeypatch):
    """The engine reports its kdamond threads' CPU from their /proc stat, keeping what an
    earlier thread used when the kdamond is turned on again as a new thread."""
    from exporter.engines.damon_sysfs import engine as engine_mod
    from exporter.procfs.parsers import StatInfo

    cpu = {1001: 2.0, 1002: 0.5}
    monkeypatch.setattr(engine_mod, "read_stat", lambda io, root, pid, hint: StatInfo(
        "kdamond.0", "S", 1, utime=int(cpu[pid] * engine_mod_ticks()), stime=0))
    fake = FakeDamon(tmp_path)
    e = engine(fake, tmp_path)
    assert e.kernel_cpu_seconds() == 0.0  # not running yet
    e.set_targets([TargetSpec("a", (ref(procs[0]),))])
    e.step()
    assert e.kdamond_pid == 1001
    assert e.kernel_cpu_seconds() == 2.0
    fake.kill_kdamond()  # it stops; the engine turns it on again: a new thread
    e.step()
    e.step()
    assert e.kdamond_pid == 1002
    assert e.kernel_cpu_seconds() == 2.5
    e.close()


def engine_mod_ticks() -> int:
    from exporter.procfs.parsers import CLOCK_TICKS

    return CLOCK_TICKS


def test_a_zombie_leader_is_given_to_the_kernel_as_a_live_thread(tmp_path):
    """A process whose main thread exited while another runs: kernel DAMON takes the mm of
    the task it is given, and the zombie leader has none, so the engine writes the pid of a
    live thread of the process."""
    from tests.support.workloads import build_workload

    proc = subprocess.Popen([build_workload("zombie_leader.c", tmp_path / "bin", "dxzlsysfs")], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline().split()[1])
        for _ in range(100):
            if read_stat(PosixIO(), "/proc", pid, "").state == "Z":
                break
            time.sleep(0.02)
        tids = {int(t) for t in os.listdir(f"/proc/{pid}/task")} - {pid}
        fake = FakeDamon(tmp_path / "sys")
        e = engine(fake, tmp_path)
        e.set_targets([TargetSpec("zl", (ProcessRef(pid, read_stat(PosixIO(), "/proc", pid, "").start_time),))])
        e.step()
        (written,) = fake._pids(fake.kdamonds / "0")
        assert written in tids
        e.close()
    finally:
        proc.kill()
        proc.wait()
