"""The CPU budget controller, fed synthetic (time, CPU) points: no clock, no timing."""

from __future__ import annotations

import pytest

from exporter.core.attrs import MonitoringAttrs
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


def test_over_budget_lowers_caps_in_proportion_never_below_min():
    b = CpuBudget(0.05, BASE)
    targets = [TargetLoad("a", 200, 200), TargetLoad("b", 40, 200), TargetLoad("c", 10, 200)]
    ds, *_ = feed(b, 0.10, 3.0, targets)
    d = ds[-1]
    assert d.ratio == pytest.approx(2.0)
    # cap follows the regions actually in use, scaled by 1/(2.0*1.1)
    assert d.max_regions == {"a": int(200 / 2.2), "b": int(40 / 2.2), "c": 10} or d.max_regions == {"a": 90, "b": 18}
    assert all(v >= 10 for v in d.max_regions.values())
    assert d.attrs is None
    assert "over CPU budget" in d.message


def test_at_min_regions_the_sample_interval_stretches_and_aggregation_follows():
    b = CpuBudget(0.05, BASE)
    targets = [TargetLoad("a", 10, 10)]
    ds, *_ = feed(b, 0.20, 3.0, targets)
    d = ds[-1]
    assert d.max_regions == {}
    assert d.attrs is not None
    assert d.attrs.sample_interval == pytest.approx(0.1 * 4.0 * 1.1)
    # at least 5 samples per aggregation once stretched past the configured ratio
    assert d.attrs.aggregation_interval == pytest.approx(max(1.0, d.attrs.sample_interval * 5))
    assert d.attrs.aggregation_interval >= d.attrs.sample_interval


def test_non_adaptive_backend_goes_straight_to_stretching():
    b = CpuBudget(0.05, BASE)
    ds, *_ = feed(b, 0.10, 3.0, [TargetLoad("a", 150, 200)], adaptive=False)
    assert ds[-1].max_regions == {}
    assert ds[-1].attrs is not None and ds[-1].attrs.sample_interval > 0.1


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


def test_relax_unstretches_first_then_raises_caps_back_to_config():
    b = CpuBudget(0.05, BASE)
    feed(b, 0.10, 3.0, [TargetLoad("a", 200, 200)])
    assert b.caps == {"a": 90}
    ds, t, cpu = feed(b, 0.30, 3.0, [TargetLoad("a", 10, 10)], t0=3.0, cpu0=0.3)
    assert b.stretch > 1
    caps_before = dict(b.caps)
    stretched = b.effective_attrs().sample_interval
    actions = []
    for _ in range(200):
        ds, t, cpu = feed(b, 0.01, 1.0, [TargetLoad("a", 10, 10)], t0=t, cpu0=cpu)
        actions += [(d.attrs, dict(d.max_regions), b.stretch) for d in ds if d.attrs or d.max_regions]
    # (the first actions may still stretch: the window holds the busy seconds before)
    assert any(attrs is not None and attrs.sample_interval < stretched for attrs, _, _ in actions)
    # caps only move once the stretch is gone
    assert all(stretch == 1.0 for attrs, caps, stretch in actions if caps)
    assert any(caps for _, caps, _ in actions) and caps_before
    assert b.stretch == 1.0
    assert b.caps == {}
    assert b.effective_attrs() == BASE


def test_window_restarts_after_each_action():
    b = CpuBudget(0.05, BASE)
    ds, t, cpu = feed(b, 0.10, 3.0, [TargetLoad("a", 200, 200)])
    assert ds[-1].max_regions  # acted at t=3 (first point at t=1, 2 s span)
    d = b.observe(t + 1, cpu + 0.1, [TargetLoad("a", 90, 90)], True)
    assert d.max_regions == {} and d.attrs is None  # 1 s of new data is not enough


def test_zero_budget_disables_control():
    b = CpuBudget(0.0, BASE)
    ds, *_ = feed(b, 1.0, 5.0, [TargetLoad("a", 200, 200)])
    assert all(d.ratio is None and not d.max_regions and d.attrs is None for d in ds)


def test_reset_keeps_learnt_caps_clamped_to_new_config():
    b = CpuBudget(0.05, BASE)
    feed(b, 0.10, 3.0, [TargetLoad("a", 200, 200)])
    b.reset(0.05, MonitoringAttrs(0.1, 1.0, 5.0, 100, 300))
    assert b.caps == {"a": 100}
    b.reset(0.05, MonitoringAttrs(0.1, 1.0, 5.0, 10, 50))
    assert b.caps == {}


def test_a_stretched_aggregation_interval_keeps_idle_seconds_true():
    """The budget may lengthen the aggregation interval; ages (counted in aggregations)
    are rescaled so that idle seconds stay the time since the last access."""
    from tests.core.sim import MiB, SimulatedProcess, aggregations, make_monitor

    proc = SimulatedProcess(mappings=[(0x10000000, 0x10000000 + 16 * MiB)])  # never accessed
    mon, _, clk = make_monitor({1: proc}, MonitoringAttrs(0.1, 1.0, 100.0, 3, 10), adaptive=False)
    snap = list(aggregations(mon, 20))[-1]
    idle_before = max(r.idle_seconds for r in snap.target("t").regions)
    assert idle_before == pytest.approx(20.0)  # watched for 20 s, never seen accessed
    mon.set_attrs(MonitoringAttrs(0.5, 5.0, 100.0, 3, 10))
    snaps = list(aggregations(mon, 3))  # one with the old attrs, then two of 5 s
    idle_after = max(r.idle_seconds for r in snaps[-1].target("t").regions)
    assert idle_after == pytest.approx(idle_before + 1.0 + 10.0)  # exactly the time that passed
