"""Configs written to hurt: deep nesting and huge files (issue 12).

Each must be one FILE:LINE error, from check-config as from the loader, never a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, parse_config
from exporter.config.yamlfile import MAX_CONFIG_BYTES, MAX_DEPTH

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
    assert lines[0] == "c.yaml:1: a: unknown key (expected one of: backend, monitoring, cold_age, working_set_window, cpu_budget, targets)"


def test_deep_file_through_check_config_exits_2_with_one_line(tmp_path):
    f = tmp_path / "deep.yaml"
    f.write_text(deep_yaml(500))
    p = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(f)], cwd=REPO, capture_output=True, text=True, timeout=60)
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
