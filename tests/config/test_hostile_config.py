"""Configs written to hurt: deep nesting and huge files (issue 12).

Each must be one FILE:LINE error, from check-config as from the loader, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, parse_config
from exporter.config.yamlfile import MAX_CONFIG_BYTES, MAX_DEPTH
from tests.support.exporter import run_exporter

REPO = str(Path(__file__).resolve().parents[2])
OK_TARGETS = "targets:\n  - name: web\n    match: {comm: [nginx]}\n"


def deep_yaml(levels: int) -> str:
    """``levels`` nested block mappings, one per line: a: / b: / ... (about 2 bytes a level)."""
    return "".join(" " * i + "a:\n" for i in range(levels)) + " " * levels + "x\n"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    return info.value.lines


def test_500_levels_of_nesting_is_one_positioned_line():
    # block style (one level per line) and flow style (500 levels on one 1 KB line)
    assert errors(deep_yaml(500)) == [f"c.yaml:{MAX_DEPTH}: YAML syntax error: nested deeper than {MAX_DEPTH} levels"]
    assert errors("targets: " + "[" * 500 + "]" * 500 + "\n") == [f"c.yaml:1: YAML syntax error: nested deeper than {MAX_DEPTH} levels"]


def test_nesting_up_to_the_limit_is_an_ordinary_config_error():
    lines = errors(deep_yaml(MAX_DEPTH - 1))
    assert lines[0] == "c.yaml:1: a: unknown key (expected one of: backend, monitoring, cold_age, working_set_window, cpu_budget, memory_limit, remove_empty_groups, histograms, kubernetes, targets)"


def test_deep_file_through_check_config_exits_2_with_one_line(tmp_path):
    f = tmp_path / "deep.yaml"
    f.write_text(deep_yaml(500))
    p = run_exporter("check-config", str(f))
    assert (p.returncode, p.stderr) == (2, f"{f}:{MAX_DEPTH}: YAML syntax error: nested deeper than {MAX_DEPTH} levels\n")


def test_files_over_the_size_limit_are_refused_unread(tmp_path):
    big = tmp_path / "big.yaml"
    regex = "a" * (10 << 20)
    big.write_text(OK_TARGETS + f"  - name: big\n    match: {{cmdline: ['{regex}']}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(big))
    assert info.value.lines == [f"{big}:1: file larger than {MAX_CONFIG_BYTES} bytes (1 MiB); refusing to parse it"]
    # exactly at the limit is fine (padded with a comment)
    ok = tmp_path / "ok.yaml"
    ok.write_text(OK_TARGETS + "#" * (MAX_CONFIG_BYTES - len(OK_TARGETS)))
    assert ok.stat().st_size == MAX_CONFIG_BYTES
    assert [t.name for t in load_config(str(ok)).targets] == ["web"]
    assert errors(OK_TARGETS + "#" * MAX_CONFIG_BYTES) == [f"c.yaml:1: file larger than {MAX_CONFIG_BYTES} bytes (1 MiB); refusing to parse it"]


def test_cmdline_regexes_are_re2():
    c = parse_config("targets:\n  - name: a\n    match: {cmdline: ['^(a+)+( [0-9]+)?$', '(?i)JAVA']}\n")
    evil, java = c.targets[0].cmdline
    assert evil.search("a" * 50000 + "! 1000") is None  # linear time: Python's re would never return
    assert evil.search("aaaa 1000") is not None
    assert java.search("/usr/bin/java -jar x") is not None


def test_what_re2_cannot_compile_is_a_positioned_error():
    assert errors("targets:\n  - name: a\n    match:\n      cmdline:\n        - '(a)\\1'\n        - '(?=x)y'\n        - 'x\\Z'\n") == [
        "c.yaml:5: targets[0].match.cmdline[0]: bad regex '(a)\\\\1': RE2 cannot compile it: invalid escape sequence: \\1 (RE2, as in Prometheus, has no backreferences, lookahead or lookbehind)",
        "c.yaml:6: targets[0].match.cmdline[1]: bad regex '(?=x)y': RE2 cannot compile it: invalid perl operator: (?= (RE2, as in Prometheus, has no backreferences, lookahead or lookbehind)",
        "c.yaml:7: targets[0].match.cmdline[2]: bad regex 'x\\\\Z': RE2 cannot compile it: invalid escape sequence: \\Z (RE2, as in Prometheus, has no backreferences, lookahead or lookbehind)",
    ]


def test_a_huge_regex_is_refused_by_re2_memory_bound():
    regex = "x" * (900 << 10)  # under the file size limit, over RE2's 8 MiB program limit
    assert errors(f"targets:\n  - name: a\n    match: {{cmdline: ['{regex}']}}\n") == [
        f"c.yaml:3: targets[0].match.cmdline[0]: bad regex {'x' * 80!r}... (921600 characters): RE2 cannot compile it: pattern too large - compile failed"
    ]


@pytest.mark.parametrize(
    "key, value, maximum",
    [
        ("monitoring.sample_interval", "1000y", "1m"),
        ("monitoring.aggregation_interval", "100y", "1h"),
        ("monitoring.update_interval", "2h", "1h"),
        ("cold_age", "31d", "30d"),
        ("working_set_window", "5w", "30d"),
    ],
)
def test_durations_have_upper_bounds(key, value, maximum):
    if key.startswith("monitoring."):
        text = f"monitoring:\n  {key.split('.')[1]}: {value}\n" + OK_TARGETS
        line = 2
        if key != "monitoring.sample_interval":  # keep the sample <= aggregation rule out of the way
            text = text.replace("monitoring:\n", "monitoring:\n  sample_interval: 1s\n")
            line = 3
    else:
        text = f"{key}: {value}\n" + OK_TARGETS
        line = 1
    assert errors(text) == [f"c.yaml:{line}: {key}: {value} is longer than the maximum of {maximum}"]


def test_durations_at_their_bounds_and_absurd_spellings():
    c = parse_config("monitoring: {sample_interval: 1m, aggregation_interval: 1h, update_interval: 1h}\ncold_age: 30d\nworking_set_window: 720h\n" + OK_TARGETS)
    assert (c.monitoring.sample_interval, c.monitoring.aggregation_interval, c.cold_age, c.working_set_window) == (60, 3600, 30 * 86400, 30 * 86400)
    digits = "9" * 5000
    assert errors(f"cold_age: {digits}s\n" + OK_TARGETS) == [f"c.yaml:1: cold_age: not a duration: {digits[:20]!r}... (5001 characters)"]


def test_reload_interval_flag_is_bounded(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(OK_TARGETS)
    p = run_exporter("--config", str(cfg), "--config.auto-reload-interval", "100y")
    assert (p.returncode, p.stderr) == (2, "damon-exporter: error: --config.auto-reload-interval: 100y is longer than the maximum of 1h\n")
