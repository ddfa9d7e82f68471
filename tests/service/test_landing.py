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
