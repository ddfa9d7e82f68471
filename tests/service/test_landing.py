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
    page = landing_page(st, "/metrics")
    assert re.findall(r"<th>(.*?)</th>", page.decode()) == list(COLUMNS)
    assert rows(page) == [
        # resident 28 MiB: 12 MiB accessed within the window, 16 MiB idle 200 s > cold_age
        ["web", 'team="blue"', "2", "up", "28.0 MiB", "12.0 MiB", "16.0 MiB", "57%"],
        ["gone", "", "0", "down: no process matches", "0.0 MiB", "0.0 MiB", "0.0 MiB", "0%"],
        ["denied", "", "1", "down: pid 6: permission denied", "1.0 MiB", "1.0 MiB", "0.0 MiB", "0%"],
        ["new", 'pod_uid="u-1"', "2", "waiting for first aggregation", "", "", "", ""],
    ]


def test_names_and_labels_are_escaped():
    st = ServiceState(version="1", backend="none", pending=(PendingTarget("<b>x</b>", 1, (("app", '"&<'),)),))
    page = landing_page(st, "/metrics").decode()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert rows(page.encode())[0][:2] == ["<b>x</b>", 'app=""&<"']
