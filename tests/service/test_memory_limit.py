"""memory_limit: the exporter's own resident memory bounded by configuration. Over it, what
is monitored stays monitored and nothing new is taken on; the processes left out are counted
per target, with a log line, an error and a gauge. The config's sizes and their errors."""

from __future__ import annotations

import pytest

from exporter.config import ConfigError, parse_config
from tests.support.exporter import comm_target, fast_config, unique_comm

BASE = "targets:\n  - name: a\n    match:\n      comm: [x]\n"


@pytest.mark.parametrize("text, value", [("96MiB", 96 << 20), ("100Mi", 100 << 20), ("1.5GiB", 3 << 29), ("0", 0),
                                         ("64000000", 64000000), ("100M", 100_000_000)])
def test_sizes(text, value):
    assert parse_config(f"memory_limit: {text}\n{BASE}", "c.yaml").memory_limit == value


@pytest.mark.parametrize("text, message", [
    ("lots", "c.yaml:1: memory_limit: not a size: 'lots' (expected a number and a unit: B, KiB, MiB, GiB, Ki, Mi, Gi, KB, MB, GB)"),
    ("12MiB", "c.yaml:1: memory_limit: must be 0 (no limit) or between 32 MiB (the exporter itself) and 64 GiB, got 12582912 bytes"),
    ("[1]", "c.yaml:1: memory_limit: expected a size like 96MiB, got list"),
    ("true", "c.yaml:1: memory_limit: expected a size like 96MiB, got bool"),
    ("-5", "c.yaml:1: memory_limit: must be 0 (no limit) or between 32 MiB (the exporter itself) and 64 GiB, got -5 bytes"),
])
def test_bad_sizes_name_file_line_and_key(text, message):
    with pytest.raises(ConfigError) as e:
        parse_config(f"memory_limit: {text}\n{BASE}", "c.yaml")
    assert e.value.lines == [message]


def test_over_the_limit_new_processes_are_left_out_and_said_so(exporter, children):
    """32 MiB is below what the exporter itself holds: after its first aggregation it is over
    the limit. The process it watched before stays watched; one started after is left out."""
    name = unique_comm("lim")
    first = children(name, hot_mib=4, cold_mib=4)
    e = exporter(fast_config(comm_target("lim", name)).replace("targets:\n", "memory_limit: 32MiB\ntargets:\n"))
    e.wait_ready()
    e.wait_for(lambda s: s.get("damon_sampler_memory_limited") == 1 and s.get("damon_target_processes", target="lim") == 1,
               what="the limit holding, the first child monitored")
    children(name, hot_mib=4, cold_mib=4)
    s = e.wait_for(lambda s: s.get("damon_target_unmonitored_processes", target="lim", kind="limit") == 1,
                   what="the second child left out")
    assert s.get("damon_target_processes", target="lim") == 1
    assert s.get("damon_config_memory_limit_bytes") == 32 << 20
    assert s.get("damon_sampler_errors_total", kind="limit") == 1
    assert s.get("damon_resident_bytes", target="lim") >= 8 << 20  # the first child's numbers stay
    assert "memory_limit reached: no new process is monitored" in e.logs()
    assert first.proc.poll() is None
