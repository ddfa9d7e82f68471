"""The CPU budget controller, fed synthetic (time, CPU) points: no clock, no timing."""

from __future__ import annotations

import pytest

from exporter.model.attrs import MonitoringAttrs
from exporter.service.budget import MAX_STRETCH, CpuBudget, TargetLoad

BASE = MonitoringAttrs(0.1, 1.0, 5.0, 10, 200)


def feed(b: CpuBudget, share: float, seconds: float, targets, adaptive=True, t0=0.0, cpu0=0.0, step=1.0):
    """Feed ``seconds`` of aggregations each using ``share`` of a core; return the decisions."""
    out = []
    t, cpu = t0, cpu0
    n = int(seconds / step)
    for _ in range(n):
        t += step
        cpu += share * step
        out.append(b.observe(t, cpu, targets, adaptive))
    return out, t, cpu


def test_no_decision_before_the_window_has_enough_span():
    b = CpuBudget(0.05, BASE)
    d = b.observe(0.0, 0.0, [], True)
    assert d.ratio is None
    d = b.observe(1.0, 1.0, [TargetLoad("a", 200, 200)], True)  # 20x over, but only 1 s seen
    assert d.ratio == pytest.approx(20.0)
    assert d.max_regions == {} and d.attrs is None


def test_over_budget_spends_time_first_within_the_window():
    """working_set_window 4 s: at most 0.4 s samples (10 per window) and 2 s aggregations
    (2 per window); caps untouched until then."""
    b = CpuBudget(0.05, BASE, resolution=4.0)
    assert b.max_stretch() == pytest.approx(4.0)
    targets = [TargetLoad("a", 200, 200)]
    ds, t, cpu = feed(b, 0.10, 3.0, targets)
    d = ds[-1]
    assert d.ratio == pytest.approx(2.0)
    assert d.max_regions == {}
    assert d.attrs.sample_interval == pytest.approx(0.1 * 2.2)
    # past 5 samples per aggregation the aggregation interval follows
    assert d.attrs.aggregation_interval == pytest.approx(max(1.0, 0.22 * 5))
    assert "sample interval now 0.22s" in d.message
    ds, t, cpu = feed(b, 0.10, 3.0, targets, t0=t, cpu0=cpu)  # still over: up to the limit
    assert ds[-1].attrs.sample_interval == pytest.approx(0.4)
    assert ds[-1].attrs.aggregation_interval == pytest.approx(2.0)
    assert b.stretch == pytest.approx(4.0)


def test_caps_only_once_time_is_spent_and_never_below_the_floor():
    b = CpuBudget(0.05, BASE, resolution=4.0)
    targets = [TargetLoad("a", 200, 200), TargetLoad("b", 60, 200), TargetLoad("c", 10, 200)]
    t = cpu = 0.0
    decisions = []
    for _ in range(6):
        ds, t, cpu = feed(b, 0.10, 3.0, targets, t0=t, cpu0=cpu)
        decisions += [d for d in ds if d.attrs or d.max_regions]
    first_cap = next(i for i, d in enumerate(decisions) if d.max_regions)
    assert all(d.attrs is not None for d in decisions[:first_cap])  # time first
    assert b.stretch == pytest.approx(b.max_stretch())
    assert b.region_floor() == 40  # 4 x min_regions
    d = decisions[first_cap]
    # in proportion to the regions in use (1 / (2.0 x 1.1)), never below the floor
    assert d.max_regions == {"a": int(200 / 2.2), "b": 40, "c": 40}
    assert "region caps lowered" in d.message and "floor 40" in d.message
    assert min(b.caps.values()) == 40  # repeated cuts stop at the floor


def test_the_floor_leaves_room_to_split():
    """DAMON splits only while the merged regions are at most half the cap: a target with
    more of them (more processes, more edges) gets a higher floor, and a cap that comes to
    sit below it is raised at once, whatever the budget."""
    b = CpuBudget(0.05, BASE, resolution=4.0)
    assert b.region_floor(TargetLoad("a", 40, 200, nr_merged=10)) == 40
    assert b.region_floor(TargetLoad("a", 60, 200, nr_merged=26)) == 65
    assert b.region_floor(TargetLoad("a", 300, 200, nr_merged=150)) == 200  # never above max
    t = cpu = 0.0
    for _ in range(6):
        ds, t, cpu = feed(b, 0.30, 3.0, [TargetLoad("a", 200, 200, nr_merged=21)], t0=t, cpu0=cpu)
    assert b.caps == {"a": 53}
    # a little more left after merging: still splitting (24 <= 53 / 2), nothing moves
    d = b.observe(t + 0.5, cpu + 0.15, [TargetLoad("a", 53, 53, nr_merged=24)], True)
    assert d.max_regions == {}
    # the pattern grew more edges: 30 regions survive merging, 53 leaves no room to split
    d = b.observe(t + 1.0, cpu + 0.3, [TargetLoad("a", 53, 53, nr_merged=30)], True)
    assert d.max_regions == {"a": 75} and "raised to their floor" in d.message
    # and no cut goes below it
    ds, t, cpu = feed(b, 0.30, 6.0, [TargetLoad("a", 75, 75, nr_merged=30)], t0=t + 1.0, cpu0=cpu + 0.3)
    assert b.caps == {"a": 75}


def test_a_configured_max_below_the_floor_is_never_cut():
    b = CpuBudget(0.05, MonitoringAttrs(0.1, 1.0, 5.0, 10, 30), resolution=1.0)
    assert b.max_stretch() == 1.0 and b.region_floor() == 30
    ds, *_ = feed(b, 0.5, 30.0, [TargetLoad("a", 30, 30)])
    assert all(not d.max_regions and d.attrs is None for d in ds)
    assert sum("every knob at its limit" in d.message for d in ds) == 1


def test_stretch_never_costs_the_window():
    """A window that the configured intervals already use up leaves no time to spend."""
    b = CpuBudget(0.05, MonitoringAttrs(0.5, 10.0, 60.0, 10, 100), resolution=5.0)
    assert b.max_stretch() == 1.0
    b = CpuBudget(0.05, MonitoringAttrs(0.5, 10.0, 60.0, 10, 100), resolution=60.0)
    assert b.max_stretch() == pytest.approx(12.0)  # 6 s samples, 30 s aggregations
    b.stretch = 12.0
    a = b.effective_attrs()
    assert (a.sample_interval, a.aggregation_interval) == (pytest.approx(6.0), pytest.approx(30.0))
    assert 60.0 / a.sample_interval >= 10 and 60.0 / a.aggregation_interval >= 2


def test_where_the_kernel_samples_the_aggregation_interval_stretches_from_the_first_step():
    """Kernel DAMON at its defaults (5 ms samples, 2 s aggregations), window 20 s: the
    exporter's work is reading the regions back once per aggregation, so the aggregations
    grow with the samples (up to 10 s, two per window) and the samples go on to 50x; a
    user-space sampler keeps its 2 s aggregations until samples are 5 per aggregation."""
    kernel = MonitoringAttrs(0.005, 2.0, 60.0, 10, 100)
    b = CpuBudget(0.05, kernel, resolution=20.0, per_aggregation=True)
    u = CpuBudget(0.05, kernel, resolution=20.0)
    assert b.max_stretch() == u.max_stretch() == pytest.approx(MAX_STRETCH)
    for stretch, aggr in ((1.0, 2.0), (2.0, 4.0), (5.0, 10.0), (50.0, 10.0)):
        b.stretch = u.stretch = stretch
        a = b.effective_attrs()
        assert (a.sample_interval, a.aggregation_interval) == (pytest.approx(0.005 * stretch), pytest.approx(aggr))
        assert u.effective_attrs().aggregation_interval == pytest.approx(2.0)
    ds, _, _ = feed(CpuBudget(0.05, kernel, resolution=20.0, per_aggregation=True), 0.10, 8.0,
                    [TargetLoad("a", 40, 100)], step=2.0)
    first = next(d for d in ds if d.attrs is not None)  # 2x over: the first cut
    assert first.attrs.aggregation_interval == pytest.approx(2.0 * 2.2)
    assert "aggregation 4.4s" in first.message
    # a window the configured aggregations already use up: only the samples stretch
    b = CpuBudget(0.05, kernel, resolution=3.0, per_aggregation=True)
    b.stretch = b.max_stretch()
    assert b.effective_attrs().aggregation_interval == pytest.approx(2.0)
    # another engine after a fallback: the sampler says which kind it is
    b.reset(0.05, kernel, 20.0, per_aggregation=False)
    b.stretch = 5.0
    assert b.effective_attrs().aggregation_interval == pytest.approx(2.0)


def test_non_adaptive_backend_only_stretches():
    b = CpuBudget(0.05, BASE, resolution=4.0)
    t = cpu = 0.0
    msgs = []
    for _ in range(5):
        ds, t, cpu = feed(b, 0.5, 3.0, [TargetLoad("a", 150, 200)], adaptive=False, t0=t, cpu0=cpu)
        assert all(d.max_regions == {} for d in ds)
        msgs += [d.message for d in ds if d.message]
    assert b.stretch == pytest.approx(4.0)
    assert any("every knob at its limit" in m for m in msgs)


def test_stretch_is_bounded_and_reported_once():
    b = CpuBudget(0.001, BASE)
    msgs = []
    t = cpu = 0.0
    for _ in range(40):
        ds, t, cpu = feed(b, 1.0, 60.0, [TargetLoad("a", 10, 10)], t0=t, cpu0=cpu)
        msgs += [d.message for d in ds if d.message]
    assert b.stretch == MAX_STRETCH
    assert b.effective_attrs().sample_interval == pytest.approx(0.1 * MAX_STRETCH)
    assert sum("every knob at its limit" in m for m in msgs) == 1


def test_relax_raises_caps_first_then_unstretches_back_to_config():
    b = CpuBudget(0.05, BASE, resolution=4.0)
    t = cpu = 0.0
    for _ in range(6):
        ds, t, cpu = feed(b, 0.30, 3.0, [TargetLoad("a", 200, 200)], t0=t, cpu0=cpu)
    assert b.stretch == pytest.approx(4.0) and b.caps == {"a": 40}
    actions = []
    for _ in range(200):
        ds, t, cpu = feed(b, 0.01, 1.0, [TargetLoad("a", 40, b.caps.get("a", 200))], t0=t, cpu0=cpu)
        actions += [(d.attrs, dict(d.max_regions), b.stretch, dict(b.caps)) for d in ds if d.attrs or d.max_regions]
    # time only moves back once every cap is back to the configured one
    assert all(not caps for attrs, _, _, caps in actions if attrs is not None)
    first_time = next(i for i, a in enumerate(actions) if a[0] is not None)
    assert all(a[1] for a in actions[:first_time]) and first_time >= 1
    assert b.stretch == 1.0 and b.caps == {}
    assert b.effective_attrs() == BASE


def test_window_restarts_after_each_action():
    b = CpuBudget(0.05, BASE)
    ds, t, cpu = feed(b, 0.10, 3.0, [TargetLoad("a", 200, 200)])
    assert ds[-1].attrs is not None  # acted at t=3 (first point at t=1, 2 s span)
    d = b.observe(t + 1, cpu + 0.1, [TargetLoad("a", 200, 200)], True)
    assert d.max_regions == {} and d.attrs is None  # 1 s of new data is not enough


def test_zero_budget_disables_control():
    b = CpuBudget(0.0, BASE)
    ds, *_ = feed(b, 1.0, 5.0, [TargetLoad("a", 200, 200)])
    assert all(d.ratio is None and not d.max_regions and d.attrs is None for d in ds)


def test_reset_keeps_learnt_caps_clamped_to_new_config():
    b = CpuBudget(0.05, BASE, resolution=4.0)
    b.stretch = 4.0
    b.caps = {"a": 40}
    b.reset(0.05, MonitoringAttrs(0.1, 1.0, 5.0, 20, 300))
    assert b.caps == {"a": 80}  # the new floor
    b.reset(0.05, MonitoringAttrs(0.1, 1.0, 5.0, 10, 50))
    assert b.caps == {}  # 80 is above the new max: back to the configured cap
    b.reset(0.05, MonitoringAttrs(0.1, 1.0, 5.0, 10, 50), resolution=2.0)
    assert b.stretch == pytest.approx(2.0)  # a shorter window allows less stretch


def test_a_stretched_aggregation_interval_keeps_idle_seconds_true():
    """The budget may lengthen the aggregation interval; ages (counted in aggregations)
    are rescaled so that idle seconds stay the time since the last access."""
    from tests.support.simulation import MiB, SimulatedProcess, aggregations, make_monitor

    proc = SimulatedProcess(mappings=[(0x10000000, 0x10000000 + 16 * MiB)])  # never accessed
    mon, _, clk = make_monitor({1: proc}, MonitoringAttrs(0.1, 1.0, 100.0, 3, 10))
    snap = list(aggregations(mon, 20))[-1]
    idle_before = max(r.idle_seconds for r in snap.target("t").regions)
    assert idle_before == pytest.approx(20.0)  # watched for 20 s, never seen accessed
    mon.set_attrs(MonitoringAttrs(0.5, 5.0, 100.0, 3, 10))
    snaps = list(aggregations(mon, 3))  # one with the old attrs, then two of 5 s
    idle_after = max(r.idle_seconds for r in snaps[-1].target("t").regions)
    assert idle_after == pytest.approx(idle_before + 1.0 + 10.0)  # exactly the time that passed
