"""The landing page lists every group with its labels, working set, cold bytes and cold ratio."""

from __future__ import annotations

import re
from html import unescape

from exporter.service.state import PendingTarget, ServiceState
from exporter.web.landing import COLUMNS, landing_page

from .test_metrics_families import snapshot


def rows(page: bytes) -> list[list[str]]:
    text = page.decode()
    return [[unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in re.findall(r"<tr>(.*?)</tr>", text) if "<td" in r]


def test_rows_show_labels_and_memory_numbers():
    st = ServiceState(version="1.2.3", backend="clear_refs", summary=snapshot(), sample_interval=0.1, aggregation_interval=1.0,
                      pending=(PendingTarget("new", 2, (("pod_uid", "u-1"), ("team", ""))),))
    page = landing_page(st, "/metrics", now=1700000012.0)  # 12 s after the aggregation
    assert re.findall(r"<th>(.*?)</th>", page.decode()) == list(COLUMNS)
    assert rows(page) == [
        # resident 28 MiB: 12 MiB accessed within the window, 16 MiB idle 200 s > cold_age
        # with what one aggregation's samples leave unproven of the used regions
        ["web", 'team="blue"', "2", "up", "28.0 MiB", "12.0 MiB ± 5.0 MiB", "12 s ago", "16.0 MiB ± 5.0 MiB", "12 s ago", "57%"],
        ["gone", "", "0", "down: no process matches", "0.0 MiB", "0.0 MiB", "12 s ago", "0.0 MiB", "12 s ago", "0%"],
        # one hit in one check proves a share of only 5% (ALPHA) used per interval
        ["denied", "", "1", "down: pid 6: permission denied", "1.0 MiB", "1.0 MiB ± 0.9 MiB", "12 s ago", "0.0 MiB ± 0.9 MiB", "12 s ago", "0%"],
        ["new", 'pod_uid="u-1"', "2", "waiting for first aggregation", "", "", "", "", "", ""],
    ]


def test_figures_say_their_error_their_age_and_not_known_yet():
    """A working set measured 3 minutes ago with its error; before cold_age has passed no
    cold figure (and no 0% ratio), but "not known yet"."""
    from dataclasses import replace

    web = snapshot().target("web")
    old = replace(web, working_set_measured_at=web.aggregated_at - 180, working_set_error_bytes=3 << 20)
    old = replace(old, cold_error_bytes=0)
    young = replace(web, cold_bytes=0, cold_unknown_bytes=16 << 20, cold_error_bytes=16 << 20)
    st = ServiceState(version="1", backend="clear_refs", summary=replace(snapshot(), targets=(old, young)))
    (a, b) = rows(landing_page(st, "/metrics", now=web.aggregated_at + 2))
    assert a[5:10] == ["12.0 MiB ± 3.0 MiB", "3 min ago", "16.0 MiB", "2 s ago", "57%"]
    assert b[7:10] == ["not known yet"] * 3


def test_durations_are_rounded_for_people():
    from exporter.web.landing import human_seconds

    assert [human_seconds(x) for x in (0.1, 0.5, 1.69435, 2.0, 8.5, 59.6, 240, 330, 7200)] == [
        "100 ms", "500 ms", "1.7 s", "2 s", "8.5 s", "60 s", "4 min", "5.5 min", "2 h"]


def test_intervals_in_effect_beside_the_configured_ones_with_the_reason():
    from exporter.web.landing import intervals

    plain = ServiceState(version="1", backend="page_idle", sample_interval=0.5, aggregation_interval=10.0,
                         configured_sample_interval=0.5, configured_aggregation_interval=10.0)
    assert intervals(plain) == "Sample interval: 500 ms, aggregation interval: 10 s (as configured)"
    stretched = plain.with_changes(sample_interval=1.69435, aggregation_interval=8.5, configured_sample_interval=0.1,
                                   configured_aggregation_interval=2.0, cpu_budget=0.05, budget_ratio=0.97)
    assert intervals(stretched) == ("Sample interval: 1.7 s, aggregation interval: 8.5 s; configured 100 ms and 2 s: "
                                    "stretched by the CPU budget of 5% of a core, 97% of it in use")
    page = unescape(landing_page(stretched, "/metrics").decode())
    assert intervals(stretched) in page


def test_names_and_labels_are_escaped():
    st = ServiceState(version="1", backend="none", pending=(PendingTarget("<b>x</b>", 1, (("app", '"&<'),)),))
    page = landing_page(st, "/metrics").decode()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert rows(page.encode())[0][:2] == ["<b>x</b>", 'app=""&<"']


def test_default_config_notice_only_while_the_default_is_in_use():
    from exporter.config.default import DEFAULT_CONFIG_YAML

    plain = landing_page(ServiceState(version="1", backend="clear_refs"), "/metrics").decode()
    assert 'id="default-config"' not in plain and "embedded default" not in plain
    page = landing_page(ServiceState(version="1", backend="clear_refs", default_config=True), "/metrics").decode()
    notice = page[page.index('<div id="default-config"'):page.index("<h2>Targets</h2>")]  # above the table
    text = unescape(re.sub(r"<[^>]+>", "", notice))
    assert "No config file: the embedded default config is in use." in text
    assert "10 programs with the most\nresident memory" in text
    assert "--config.file FILE" in text and "config.example.yaml" in text and "README.md#configuration" in text
    assert "damon-exporter check-config FILE" in text
    assert DEFAULT_CONFIG_YAML in text  # the default, as a file to start from
