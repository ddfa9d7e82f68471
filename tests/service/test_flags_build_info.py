"""node_exporter's conventions: --config.file (with --config as alias), build facts in
damon_exporter_build_info, the backend in its own gauge, --web.disable-exporter-metrics."""

from __future__ import annotations

import json
import platform
import re
import subprocess
from pathlib import Path

from exporter import build
from exporter.build import git_facts

from tests.support.exporter import REPO, comm_target, fast_config
from tests.support.exporter import run_exporter

CONFIG = fast_config(comm_target("a", "no-such-comm"))


def test_help_names_config_file_and_its_alias():
    r = run_exporter("--help")
    help_text = " ".join(r.stdout.split())
    assert "--config.file FILE, --config FILE" in help_text
    assert "--config is an alias" in help_text
    assert "--web.disable-exporter-metrics" in help_text


def test_help_lists_every_command_with_one_line_and_the_default_config():
    from exporter.cli import SUBCOMMANDS

    r = run_exporter("--help")
    assert r.returncode == 0
    usage = r.stdout.split("\n\n", 1)[0].splitlines()
    assert usage == [
        "usage: damon-exporter [flags]",
        "       damon-exporter snapshot (--pid PID ... | --comm NAME) [flags]",
        "       damon-exporter check-config FILE",
    ]
    commands = r.stdout.split("\ncommands:\n", 1)[1].splitlines()
    listed = [re.match(r"  (\S+)  +(\S.*)$", line) for line in commands[: len(SUBCOMMANDS)]]
    assert all(listed) and [m.group(1) for m in listed] == list(SUBCOMMANDS)  # every command, one line each
    assert all(len(line) <= 100 for line in commands)
    assert "'damon-exporter COMMAND --help' shows a command's own flags." in commands
    assert "embedded default config: the 10 programs" in r.stdout
    # the serve flags are still there
    assert "--web.listen-address [HOST]:PORT" in r.stdout and "--version" in r.stdout
    for name in SUBCOMMANDS:
        sub = run_exporter(name, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: damon-exporter {name}")


#: Prometheus' version.Print (node_exporter --version), line by line
VERSION_LINES = [
    r"damon-exporter, version 0\.1\.0 \(branch: (?P<branch>[^,()]+), revision: (?P<revision>[0-9a-f]{40}|unknown)\)",
    r"  build user:       (?P<user>\S+)",
    r"  build date:       (?P<date>\d{8}-\d{2}:\d{2}:\d{2}|unknown)",
    r"  python version:   (?P<python>\d+\.\d+\.\d+\S*)",
    r"  platform:         (?P<platform>[a-z0-9]+/[a-z0-9]+)",
    r"  tags:             unknown",
]


def _version_fields(text: str) -> dict[str, str]:
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == len(VERSION_LINES) + 1, text
    fields: dict[str, str] = {}
    for pattern, line in zip(VERSION_LINES, lines):
        m = re.fullmatch(pattern, line)
        assert m, f"{line!r} does not match {pattern!r}"
        fields.update(m.groupdict())
    return fields


def test_version_prints_what_node_exporter_prints():
    r = run_exporter("--version")
    assert r.returncode == 0 and r.stderr == ""
    fields = _version_fields(r.stdout)
    revision, branch = git_facts(Path(REPO))
    assert (fields["revision"], fields["branch"]) == (revision, branch)  # the same facts as the metric
    assert (fields["user"], fields["date"]) == ("unknown", "unknown")  # a checkout is not a stamped build
    assert fields["python"] == platform.python_version()
    assert fields["platform"] == {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}.get(platform.machine(), fields["platform"])


def test_version_of_a_stamped_build(tmp_path, monkeypatch):
    pkg = tmp_path / "exporter"
    pkg.mkdir()
    (pkg / "_build.json").write_text(json.dumps({"revision": "f" * 40, "branch": "release-1", "build_user": "root@builder",
                                                 "build_date": "20240714-11:53:45"}))
    monkeypatch.setattr(build, "_PACKAGE", pkg)
    build.build_info.cache_clear()
    try:
        fields = _version_fields(build.version_text())
        assert (fields["revision"], fields["branch"], fields["user"], fields["date"]) == ("f" * 40, "release-1", "root@builder", "20240714-11:53:45")
        (pkg / "_build.json").write_text("[1, 2]")  # JSON, but not an object: every fact unknown
        build.build_info.cache_clear()
        assert (build.build_info().revision, build.build_info().build_user) == ("unknown", "unknown")
    finally:
        build.build_info.cache_clear()


def test_config_file_and_alias_name_the_same_setting(exporter, tmp_path):
    """The harness passes --config A; a later --config.file B wins: both spell one flag."""
    other = tmp_path / "other.yaml"
    other.write_text(fast_config(comm_target("from-config-file", "no-such-comm")))
    e = exporter(CONFIG, extra=["--config.file", str(other)])
    e.wait_ready()
    s = e.scrape()
    assert s.get("damon_target_up", target="from-config-file") == 0
    assert s.get("damon_target_up", target="a") is None


def test_build_info_and_backend_gauge(exporter):
    e = exporter(CONFIG)
    e.wait_ready()
    s = e.scrape()
    (info,) = s.all("damon_exporter_build_info")
    facts = git_facts(Path(REPO))
    assert info.labels == {"version": "0.1.0", "revision": facts[0], "branch": facts[1], "pythonversion": platform.python_version()}
    assert len(info.labels["revision"]) == 40
    (backend,) = s.all("damon_sampler_backend_info")
    assert backend.labels == {"backend": "clear_refs"} and backend.value == 1
    # auto passed over the two backends it prefers, each with a one-word reason
    passed = {x.labels["backend"]: x.labels["reason"] for x in s.all("damon_sampler_backend_passed_over")}
    assert set(passed) == {"damon_sysfs", "page_idle"} and set(passed.values()) <= {"unavailable", "refused", "failed"}
    assert s.get("process_resident_memory_bytes") > 0


def test_disable_exporter_metrics_drops_process_metrics_only(exporter):
    e = exporter(CONFIG, extra=["--web.disable-exporter-metrics"])
    e.wait_ready()
    s = e.scrape()
    assert not [x.name for x in s.samples if x.name.startswith("process_")]
    assert s.get("damon_exporter_build_info", version="0.1.0") == 1
    assert s.get("damon_target_up", target="a") == 0
    # OpenMetrics still ends with exactly one # EOF
    r = e.request("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"})
    assert r.text.endswith("# EOF\n") and r.text.count("# EOF") == 1


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_git_facts_of_checkouts_worktrees_and_detached_heads(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "one")
    rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_facts(repo) == (rev, "main")
    _git(repo, "pack-refs", "--all")  # the ref now lives only in packed-refs
    assert git_facts(repo) == (rev, "main")
    _git(repo, "worktree", "add", "-q", "-b", "feature", str(tmp_path / "wt"))
    assert git_facts(tmp_path / "wt") == (rev, "feature")
    _git(repo, "checkout", "-q", "--detach")
    assert git_facts(repo) == (rev, "HEAD")
    assert git_facts(tmp_path) is None


def test_stamped_build_facts_win_over_git(tmp_path, monkeypatch):
    pkg = tmp_path / "exporter"
    pkg.mkdir()
    (pkg / "_build.json").write_text(json.dumps({"revision": "abc123", "branch": "release-1"}))
    monkeypatch.setattr(build, "_PACKAGE", pkg)
    build.build_info.cache_clear()
    try:
        info = build.build_info()
        assert (info.revision, info.branch, info.version) == ("abc123", "release-1", "0.1.0")
        (pkg / "_build.json").unlink()
        build.build_info.cache_clear()
        assert (build.build_info().revision, build.build_info().branch) == ("unknown", "unknown")
    finally:
        build.build_info.cache_clear()


def test_path_procfs_is_where_processes_are_found_and_read(exporter, children, tmp_path):
    """--path.procfs as node_exporter's: a tree holding only one of two matching processes
    (and ``self``, which the clear_refs backend probes) shows exactly that one."""
    from tests.support.exporter import unique_comm

    comm = unique_comm("pp")
    shown, hidden = children(comm), children(comm)
    fake = tmp_path / "proc"
    fake.mkdir()
    (fake / "self").symlink_to("/proc/self")
    (fake / str(shown.pid)).symlink_to(f"/proc/{shown.pid}")
    e = exporter(fast_config(comm_target("pp", comm)), extra=["--path.procfs", str(fake), "--path.sysfs", "/sys"])
    e.wait_ready()
    s = e.wait_for(lambda s: s.get("damon_target_up", target="pp") == 1, what="the target up")
    assert s.get("damon_target_processes", target="pp") == 1
    assert hidden.pid != shown.pid
    default = exporter(fast_config(comm_target("pp", comm)))
    default.wait_ready()
    assert default.wait_for(lambda s: s.get("damon_target_processes", target="pp") == 2, what="both processes under /proc")
    r = run_exporter("--help")
    assert "--path.procfs PATH" in r.stdout and "--path.sysfs PATH" in r.stdout


def test_a_target_that_matches_nothing_says_so_at_debug_level(exporter):
    from tests.support.wait import wait_for

    e = exporter(CONFIG)  # the harness runs at --log.level debug
    e.wait_ready()
    line = wait_for(lambda: next((x for x in e.logs().splitlines() if 'msg="target matches no process"' in x), None),
                    20, "the debug line")
    assert "target=a" in line and "no-such-comm" in line and "no process matches every rule given" in line


def test_the_policy_in_force_is_exported(exporter):
    e = exporter(fast_config(comm_target("a", "no-such-comm"), cold_age="7s", window="3s"))
    e.wait_ready()
    s = e.wait_for(lambda s: s.get("damon_config_cold_age_seconds") == 7.0, what="cold_age exported")
    assert s.get("damon_config_working_set_window_seconds") == 3.0
