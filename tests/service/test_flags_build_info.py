"""node_exporter's conventions: --config.file (with --config as alias), build facts in
damon_exporter_build_info, the backend in its own gauge, --web.disable-exporter-metrics."""

from __future__ import annotations

import json
import platform
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
