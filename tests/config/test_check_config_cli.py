"""``python -m exporter check-config FILE`` as a user runs it: exit codes and output."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.exporter import run_exporter

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run_exporter("check-config", *args, input=stdin)


def test_valid_file_exits_0_with_summary():
    p = run(str(EXAMPLE))
    assert p.returncode == 0
    assert p.stdout == f"{EXAMPLE}: OK (4 targets, backend auto)\n"
    assert p.stderr == ""


def test_single_target_summary(tmp_path):
    f = tmp_path / "one.yaml"
    f.write_text("backend: clear_refs\ntargets:\n  - {name: a, cgroup: a.slice}\n")
    p = run(str(f))
    assert (p.returncode, p.stdout) == (0, f"{f}: OK (1 target, backend clear_refs)\n")


def test_invalid_file_exits_2_with_all_error_lines_on_stderr(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("monitoring:\n  min_regions: 2\ntargets:\n  - name: a\n    match: {comm: 3}\nextra: 1\n")
    p = run(str(f))
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.splitlines() == [
        f"{f}:2: monitoring.min_regions: min_regions must be at least 3, got 2",
        f"{f}:5: targets[0].match.comm: expected a list of strings, got int",
        f"{f}:6: extra: unknown key (expected one of: backend, monitoring, cold_age, working_set_window, cpu_budget, memory_limit, remove_empty_groups, histograms, kubernetes, targets)",
    ]
    assert "Traceback" not in p.stderr


def test_syntax_error_and_missing_file_are_one_line(tmp_path):
    f = tmp_path / "syntax.yaml"
    f.write_text("targets:\n  - name: a\n  bad\n")
    p = run(str(f))
    assert p.returncode == 2
    assert len(p.stderr.splitlines()) == 1 and p.stderr == f"{f}:4: YAML syntax error: could not find expected ':' (while scanning a simple key at line 3)\n"
    p = run(str(tmp_path / "missing.yaml"))
    assert (p.returncode, p.stderr) == (2, f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory\n")


def test_usage_errors_exit_2():
    for args in ((), ("a.yaml", "b.yaml"), ("--bogus",)):
        p = run(*args)
        assert p.returncode == 2, args
        assert p.stderr == "usage: damon-exporter check-config FILE\n"
    p = run("--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: damon-exporter check-config FILE\n")


def test_stdin():
    p = run("-", stdin=EXAMPLE.read_text())
    assert (p.returncode, p.stdout) == (0, "-: OK (4 targets, backend auto)\n")
