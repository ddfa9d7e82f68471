"""The sampler thread on a simulated address space: publishing, reloads, pid reuse, failures.

These run the real thread in real time with tiny intervals and wait for *events* (a state
that appears), never for a duration.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from exporter.config import Config
from exporter.model.attrs import MonitoringAttrs
from exporter.model.engine import TargetSpec
from exporter.engines.page_idle.monitor import Monitor
from exporter.model.errors import BackendUnavailable
from exporter.model.process import ProcessRef
from exporter.engines.page_idle.ops_simulated import HotRange, SimulatedOps, SimulatedProcess
from exporter.service import sampler as sampler_mod
from exporter.service.sampler import Sampler
from exporter.service.state import ServiceState, StateBox
from tests.support.wait import wait_for

MiB = 1 << 20
FAST = MonitoringAttrs(0.01, 0.05, 0.1, 3, 10)


def proc() -> SimulatedProcess:
    hot = (0x10000000, 0x10000000 + 4 * MiB)
    cold = (0x20000000, 0x20000000 + 8 * MiB)
    return SimulatedProcess(mappings=[hot, cold], hot=[HotRange(*hot)])


class FakeDiscoverer:
    def __init__(self, specs: list[TargetSpec], label_names: tuple[str, ...] = ()) -> None:
        self.specs = specs
        self.warnings: list[str] = []
        self._label_names = label_names

    def discover(self) -> list[TargetSpec]:
        return list(self.specs)

    def label_names(self) -> tuple[str, ...]:
        return self._label_names




@pytest.fixture
def run_sampler():
    started: list[tuple[Sampler, threading.Event]] = []

    def start(config, ops_factory, discoverers) -> tuple[Sampler, StateBox]:
        box = StateBox(ServiceState(version="t", backend="none"))
        stop = threading.Event()
        s = Sampler(config, box, stop, engine_factory=lambda name, skip: Monitor(ops_factory(name)), discoverer_factory=lambda cfg: discoverers(cfg))
        s.start()
        started.append((s, stop))
        return s, box

    yield start
    for s, stop in started:
        stop.set()
        s.join(5)
        assert not s.thread.is_alive()


def test_publishes_snapshots_and_becomes_ready(run_sampler):
    procs = {10: proc()}
    disc = FakeDiscoverer([TargetSpec("web", (ProcessRef(10, 1),), (("team", "a"),))], ("team",))
    _, box = run_sampler(Config(monitoring=FAST), lambda name: SimulatedOps(procs, time.monotonic), lambda cfg: disc)
    st = wait_for(lambda: box.get() if box.get().ready and box.get().summary.stats.aggregations_total >= 3 else None)
    assert st.backend == "simulated"
    assert st.label_names == ("team",)
    t = st.summary.target("web")
    assert t.pids == (10,) and t.resident_bytes == 12 * MiB and t.labels == (("team", "a"),)
    assert st.checks_total > 0 and st.cpu_seconds_total > 0
    assert st.sample_interval == 0.01 and st.aggregation_interval == 0.05
    # DAMON's regions decide a return once per aggregation
    assert st.shortest_counted_return == 0.05


def test_targets_are_listed_as_pending_before_the_first_aggregation(run_sampler):
    procs = {10: proc(), 11: proc()}
    disc = FakeDiscoverer([TargetSpec("web", (ProcessRef(10), ProcessRef(11)))])
    slow = MonitoringAttrs(0.01, 30.0, 30.0, 3, 10)
    _, box = run_sampler(Config(monitoring=slow), lambda name: SimulatedOps(procs, time.monotonic), lambda cfg: disc)
    st = wait_for(lambda: box.get() if box.get().pending else None)
    assert [(p.name, p.nr_processes) for p in st.pending] == [("web", 2)]
    assert not st.ready and st.summary is None


def test_a_reused_pid_is_a_new_process(run_sampler):
    """Keyed by (pid, start_time): when the start time changes, the history restarts."""
    procs = {10: proc()}
    disc = FakeDiscoverer([TargetSpec("web", (ProcessRef(10, 100),))])
    _, box = run_sampler(Config(monitoring=FAST), lambda name: SimulatedOps(procs, time.monotonic), lambda cfg: disc)

    def max_age():
        snap = box.get().summary
        return max((r.age for r in snap.target("web").regions), default=0) if snap else 0

    wait_for(lambda: max_age() >= 8)  # the cold mapping ages, one per aggregation
    disc.specs = [TargetSpec("web", (ProcessRef(10, 200),))]  # same pid, new start time
    wait_for(lambda: max_age() < 4, timeout=10)
    assert box.get().summary.target("web").pids == (10,)


def test_reload_applies_new_targets_and_attrs(run_sampler):
    procs = {10: proc(), 20: proc()}
    one = FakeDiscoverer([TargetSpec("web", (ProcessRef(10),))])
    two = FakeDiscoverer([TargetSpec("web", (ProcessRef(10),)), TargetSpec("db", (ProcessRef(20),))], ("team",))
    s, box = run_sampler(Config(monitoring=FAST), lambda name: SimulatedOps(procs, time.monotonic),
                         lambda cfg: one if cfg.cold_age == 120 else two)
    wait_for(lambda: box.get().ready)
    s.apply_config(Config(monitoring=FAST.with_changes(aggregation_interval=0.08), cold_age=60))
    st = wait_for(lambda: box.get() if box.get().summary.aggregation_interval == 0.08 and box.get().summary.target("db") else None)
    assert [t.name for t in st.summary.targets] == ["web", "db"]
    assert st.label_names == ("team",)
    assert st.shortest_counted_return == 0.08  # follows the intervals in effect


def test_missing_backend_is_counted_and_retried_without_dying(run_sampler, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="exporter.sampler")
    monkeypatch.setattr(sampler_mod, "BACKEND_RETRY", 0.05)
    calls = []

    def factory(name):
        calls.append(name)
        raise BackendUnavailable("page_idle unavailable: no bitmap")

    s, box = run_sampler(Config(backend="page_idle", monitoring=FAST), factory, lambda cfg: FakeDiscoverer([]))
    wait_for(lambda: len(calls) >= 3)
    st = box.get()
    assert dict(st.errors_total)["backend_unavailable"] >= 2
    assert not st.ready and s.thread.is_alive()
    assert st.backend == "none"
    errors = [r for r in caplog.records if r.name == "exporter.sampler" and r.levelno == logging.ERROR]
    assert len(errors) == 1  # the retries do not repeat the error line
    assert errors[0].getMessage() == "cannot open access-check backend page_idle; retrying every 0.05s"


def test_unexpected_exception_restarts_the_monitor(run_sampler, monkeypatch):
    monkeypatch.setattr(sampler_mod, "RESTART_PAUSE", 0.05)
    procs = {10: proc()}

    class Flaky(SimulatedOps):
        failures = 1

        def check_accesses(self, ref, addrs):
            if Flaky.failures:
                Flaky.failures -= 1
                raise RuntimeError("bug in a backend")
            return super().check_accesses(ref, addrs)

    _, box = run_sampler(Config(monitoring=FAST), lambda name: Flaky(procs, time.monotonic),
                         lambda cfg: FakeDiscoverer([TargetSpec("web", (ProcessRef(10),))]))
    st = wait_for(lambda: box.get() if box.get().ready else None)
    assert dict(st.errors_total)["internal"] == 1
    assert st.summary.target("web").pids == (10,)


def test_internal_errors_are_published_before_the_first_aggregation(run_sampler, monkeypatch):
    monkeypatch.setattr(sampler_mod, "RESTART_PAUSE", 0.01)
    procs = {10: proc()}

    class Broken(SimulatedOps):
        def check_accesses(self, ref, addrs):
            raise RuntimeError("bug in a backend")

    _, box = run_sampler(Config(monitoring=FAST), lambda name: Broken(procs, time.monotonic),
                         lambda cfg: FakeDiscoverer([TargetSpec("web", (ProcessRef(10),))]))
    st = wait_for(lambda: box.get() if dict(box.get().errors_total).get("internal", 0) >= 4 else None)
    assert not st.ready and st.summary is None
    # the count only grows, one per restart
    n = dict(st.errors_total)["internal"]
    st = wait_for(lambda: box.get() if dict(box.get().errors_total)["internal"] > n else None)
    assert not st.ready


def test_exited_process_is_dropped_silently(run_sampler):
    procs = {10: proc(), 11: proc()}
    disc = FakeDiscoverer([TargetSpec("web", (ProcessRef(10), ProcessRef(11)))])
    _, box = run_sampler(Config(monitoring=FAST), lambda name: SimulatedOps(procs, time.monotonic), lambda cfg: disc)
    wait_for(lambda: box.get().ready and box.get().summary.target("web").pids == (10, 11))
    procs[11].exited = True
    st = wait_for(lambda: box.get() if box.get().summary.target("web").pids == (10,) else None)
    assert sum(n for _, n in st.errors_total) == 0
    assert not st.summary.target("web").errors


def test_permission_denied_is_counted_once_and_the_target_is_down(run_sampler):
    from exporter.metrics.targets import target_up
    from exporter.model.errors import AccessDenied

    procs = {10: proc(), 11: proc()}

    class Picky(SimulatedOps):
        def mappings(self, ref):
            if ref.pid == 11:
                raise AccessDenied("clear_refs needs ptrace access to the process (same uid, or CAP_SYS_PTRACE)")
            return super().mappings(ref)

    disc = FakeDiscoverer([TargetSpec("web", (ProcessRef(10), ProcessRef(11)))])
    _, box = run_sampler(Config(monitoring=FAST), lambda name: Picky(procs, time.monotonic), lambda cfg: disc)
    wait_for(lambda: box.get().ready and box.get().summary.stats.aggregations_total >= 5)
    st = box.get()
    t = st.summary.target("web")
    assert t.pids == (10,)
    assert t.errors == ("pid 11: clear_refs needs ptrace access to the process (same uid, or CAP_SYS_PTRACE)",)
    assert target_up(t) == 0
    assert dict(st.errors_total)["permission"] == 1  # not retried while the process lives


def test_the_budget_counts_the_kernels_cpu_for_the_engine():
    """An engine whose kernel thread (kdamond) works hard: its CPU is published and the
    budget sees it, though the sampler thread itself does little."""
    procs = {10: proc()}
    t0 = time.monotonic()

    class KernelHeavy(Monitor):
        def kernel_cpu_seconds(self) -> float:
            return 0.5 * (time.monotonic() - t0)  # half a core of kernel time

    box = StateBox(ServiceState(version="t", backend="none"))
    stop = threading.Event()
    s = Sampler(Config(monitoring=FAST, cpu_budget=0.05), box, stop, budget_window=0.5,
                engine_factory=lambda name, skip: KernelHeavy(SimulatedOps(procs, time.monotonic)),
                discoverer_factory=lambda cfg: FakeDiscoverer([TargetSpec("web", (ProcessRef(10),))]))
    s.start()
    try:
        st = wait_for(lambda: box.get() if box.get().budget_ratio > 3 and box.get().kernel_cpu_seconds_total > 0.2 else None)
        # what the sampler thread used is far less than what the budget saw
        assert st.cpu_seconds_total < st.kernel_cpu_seconds_total
    finally:
        stop.set()
        s.join(5)


def test_groups_replaced_by_discovery_never_outnumber_the_cap(run_sampler):
    """Discovery swaps one group for another (max_groups 2 keeps two): at every published
    state, the targets with numbers and the pending ones together are at most the two
    discovery lists, never the old group beside its replacement."""
    procs = {10: proc(), 11: proc(), 12: proc()}
    groups = [[TargetSpec("w", (ProcessRef(10),), (("pid", "10"),)), TargetSpec("w", (ProcessRef(11),), (("pid", "11"),))]]

    class Swapping(FakeDiscoverer):
        def discover(self):
            return list(groups[-1])

    disc = Swapping([], ("pid",))
    _, box = run_sampler(Config(monitoring=FAST), lambda name: SimulatedOps(procs, time.monotonic), lambda cfg: disc)
    wait_for(lambda: box.get().ready and len(box.get().summary.targets) == 2)
    groups.append([groups[0][1], TargetSpec("w", (ProcessRef(12),), (("pid", "12"),))])
    deadline = time.monotonic() + 2.0
    seen_new = False
    while time.monotonic() < deadline:
        st = box.get()
        keys = {(t.name, t.labels) for t in st.summary.targets} | {(p.name, p.labels) for p in st.pending}
        assert len(keys) <= 2, keys
        seen_new = seen_new or (("w", (("pid", "12"),)) in keys)
        time.sleep(0.001)
    assert seen_new
