"""The heatmap renderer on synthetic summaries: exact output for tiny cases."""

from __future__ import annotations

from exporter.model.records import RegionRecord, TargetRecords
from exporter.summary import Policy, summarize_target
from exporter.report.heatmap import RAMP, level, render_heatmap

P = 4096


def target(regions: list[tuple[int, int, int, int]], checks: int = 4):
    """regions: (pid, start, end, nr_accesses) with ``checks`` samples each."""
    stats = tuple(RegionRecord(pid, s, e, e - s, nr_accesses=a, nr_checks=checks) for pid, s, e, a in regions)
    return summarize_target(TargetRecords("t", tuple(r[0] for r in regions), stats, 0), Policy(cold_age=1, working_set_window=1))


A, B = 0x10000, 0x900000

FRAMES = [
    (1.0, target([(1, A, A + 4 * P, 0), (1, A + 4 * P, A + 8 * P, 4), (7, B, B + 8 * P, 2)])),
    (2.0, target([(1, A, A + 8 * P, 1), (7, B, B + 4 * P, 4)])),
]

LEGEND_RAMP = (
    "ramp (access frequency): ' ' no region, '.' 0%, ':' <12.5%, '-' <25%, '=' <37.5%, '+' <50%, "
    "'*' <62.5%, '#' <75%, '%' <87.5%, '@' >=87.5%"
)


def test_tiny_heatmap_exact():
    assert render_heatmap(FRAMES, width=8) == [
        "heatmap: 64.0 KiB of address space in 8 columns (8.0 KiB each, unmonitored gaps squeezed out); "
        "2 rows of time (2 aggregations)",
        "time |",
        "1.0s |..@@****",
        "2.0s |====@@  ",  # pid 7's second half is no longer a region: blank
        LEGEND_RAMP,
        "address ranges (columns, pid, range, size):",
        "  0-3  pid 1  0x000000010000-0x000000018000  32.0 KiB",
        "  4-7  pid 7  0x000000900000-0x000000908000  32.0 KiB",
    ]


def test_colour_only_when_asked():
    plain = render_heatmap(FRAMES, width=8)
    coloured = render_heatmap(FRAMES, width=8, colour=True)
    assert all("\x1b" not in line for line in plain)
    assert coloured[2] == "1.0s |\x1b[90m..\x1b[91m@@\x1b[33m****\x1b[0m"
    assert coloured[3] == "2.0s |\x1b[32m====\x1b[91m@@\x1b[0m  "


def test_rows_are_bucketed_and_averaged():
    # 60 aggregations of one region alternating 0 and 4 of 4 accesses: 30 rows of 2 -> 50%
    frames = [(float(i + 1), target([(1, A, A + 2 * P, 4 * (i % 2))])) for i in range(60)]
    lines = render_heatmap(frames, width=2, max_rows=30)
    assert lines[0].endswith("30 rows of time (60 aggregations)")
    rows = lines[2:32]
    assert rows[0] == " 2.0s |**"
    assert rows[-1] == "60.0s |**"
    assert {r.split("|")[1] for r in rows} == {"**"}


def test_columns_partly_covered_are_weighted_by_bytes():
    # 3 pages in 2 columns: column 0 = page 0 + half of page 1, column 1 = other half + page 2
    frames = [(1.0, target([(1, A, A + P, 4), (1, A + P, A + 3 * P, 0)]))]
    lines = render_heatmap(frames, width=2)
    # col 0: 4096 bytes at 100% + 2048 at 0% -> 66.7%, in [62.5%, 75%) -> '#'
    assert level(2 / 3) == 6 and RAMP[6] == "#"
    assert lines[2] == "1.0s |#."


def test_gaps_are_squeezed_and_width_capped_by_pages():
    # two one-page regions 1 GiB apart: two columns, not a column per GiB
    frames = [(1.0, target([(1, A, A + P, 4), (1, A + (1 << 30), A + (1 << 30) + P, 0)]))]
    lines = render_heatmap(frames, width=80)
    assert lines[2] == "1.0s |@."
    assert lines[-2:] == [
        "  0-0  pid 1  0x000000010000-0x000000011000  4.0 KiB",
        "  1-1  pid 1  0x000040010000-0x000040011000  4.0 KiB",
    ]


def test_no_regions():
    assert render_heatmap([(1.0, target([]))]) == ["heatmap: no regions were monitored"]


def test_level_edges():
    assert [level(f) for f in (0.0, 0.01, 0.125, 0.5, 0.874, 0.875, 1.0)] == [0, 1, 2, 5, 7, 8, 8]
