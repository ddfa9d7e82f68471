"""The CPU budget may cost resolution in time, never the truth of the numbers.

The real engine on simulated memory with a virtual clock, driven by the real budget
controller, whose CPU figure is a cost per access check that alternates between a heavy
and a light phase, so that it stretches, cuts caps, relaxes and stretches again, many
times. A steady access pattern must read the same throughout.
"""

from __future__ import annotations

import pytest

from exporter.model.attrs import MonitoringAttrs
from exporter.engines.page_idle.ops_simulated import HotRange
from exporter.service.budget import CpuBudget, TargetLoad
from exporter.summary.sampling import rate_lower
from tests.support.simulation import BASE, STACK, TEXT, MiB, aggregations, make_monitor, process_with_buffer

WINDOW = 4.0
COLD = 10.0
ATTRS = MonitoringAttrs(0.1, 2.0, 10.0, 10, 100)
SIZE = 512 * MiB
HOT = 64 * MiB
#: virtual seconds of a heavy, then a light phase (repeated)
PHASE = 40.0


def check_cost(now: float) -> float:
    """CPU seconds per access check: heavy enough to need every knob, then light again."""
    return 1e-3 if (now // PHASE) % 2 == 0 else 2e-5


def run(seed: int, hot_at: int, n: int):
    hot = HotRange(BASE + hot_at, BASE + hot_at + HOT)
    mon, ops, clk = make_monitor({1: process_with_buffer(SIZE, [hot])}, ATTRS, seed=seed,
                                 cold_age=COLD, working_set_window=WINDOW)
    budget = CpuBudget(0.05, ATTRS, window=10.0, resolution=WINDOW)
    cpu, last_checks = 0.0, 0
    actions = []
    for snap in aggregations(mon, n):
        cpu += (ops.checks - last_checks) * check_cost(clk())
        last_checks = ops.checks
        t = snap.target("t")
        d = budget.observe(clk(), cpu, [TargetLoad(("t", ()), t.nr_regions, t.max_regions, t.nr_merged)], True)
        for key, cap in d.max_regions.items():
            mon.set_region_cap(key, cap)
        if d.attrs is not None:
            mon.set_attrs(d.attrs)
        actions.append(d)
        yield clk(), snap, d


def overlapping(regions, pid, start, end):
    return [r for r in regions if r.pid == pid and r.start < end and start < r.end]


def merged_spans(regions):
    """The regions as merged, before this aggregation's split: contiguous records of one
    process with the same history are pieces of one region (pieces inherit everything)."""
    spans = []
    for r in regions:
        key = (r.pid, r.idle_seconds, r.nr_accesses, r.seen_accessed)
        if spans and spans[-1][0] == key and spans[-1][2] == r.start:
            spans[-1][2] = r.end
        else:
            spans.append([key, r.start, r.end])
    return [(k[0], k[1], k[2], a, b) for k, a, b in spans]  # pid, idle, nr_accesses, start, end


@pytest.mark.parametrize("seed,hot_at", [(0, SIZE - HOT), (1, 200 * MiB), (2, 0)])
def test_steady_pattern_reads_the_same_while_the_budget_acts(seed, hot_at):
    resident = SIZE + (TEXT[1] - TEXT[0]) + (STACK[1] - STACK[0])
    truth_ws, truth_cold = HOT, resident - HOT
    prev = None
    ws, cold, errors = [], [], []
    stretches = relaxes = cap_cuts = 0
    intervals = set()
    for now, snap, d in run(seed, hot_at, 160):
        t = snap.target("t")
        intervals.add((round(snap.sample_interval, 3), round(snap.aggregation_interval, 3)))
        if d.attrs is not None:
            if d.attrs.sample_interval > snap.sample_interval:
                stretches += 1
            else:
                relaxes += 1
        cap_cuts += any(c is not None and c < 100 for c in d.max_regions.values())
        # idle time never goes down without an observed access: a region that saw none
        # since the last aggregation is at least as idle as the least idle memory it was
        # made of, plus the time that passed
        if prev is not None:
            prev_now, prev_regions = prev
            for pid, idle, nr_accesses, start, end in merged_spans(t.regions):
                if nr_accesses:
                    continue
                before = overlapping(prev_regions, pid, start, end)
                floor = min(p.idle_seconds for p in before) + (now - prev_now)
                assert idle >= floor - 1e-6, (idle, start, end, before)
        prev = (now, t.regions)
        if now - 1000.0 >= 30.0:  # converged (the virtual clock starts at 1000)
            ws.append(t.working_set_bytes)
            cold.append(t.cold_bytes)
            # what the model lets the samples leave unproven at most: the hot set as one
            # draw of one aggregation's checks, all of them hits (where the budget just
            # changed the intervals, DAMON's age restarts and no earlier aggregation's
            # checks count), and the 2% the figures may be off at the hot edge
            checks = int(snap.aggregation_interval / snap.sample_interval + 1e-9)
            errors.append((t.working_set_error_bytes, HOT * (1 - rate_lower(checks, checks)) + 0.02 * truth_ws))
    # the budget really acted, both ways, repeatedly, caps included
    assert stretches >= 3 and relaxes >= 3 and cap_cuts >= 2, (stretches, relaxes, cap_cuts)
    assert len(intervals) >= 3, intervals
    # and the numbers did not move: every aggregation within 2% of the truth
    assert all(abs(x - truth_ws) <= 0.02 * truth_ws for x in ws), [x / MiB for x in ws]
    assert all(abs(x - truth_cold) <= 0.02 * truth_ws for x in cold), [x / MiB for x in cold]
    # and the error estimate agrees that they are good, as far as the samples can prove it
    assert all(e <= bound for e, bound in errors), [(round(e / MiB, 1), round(b / MiB, 1)) for e, b in errors]
