"""Issue 12: what a hostile config, client or local user could do to a running exporter.

Every test runs the real exporter as a subprocess and talks to it over real sockets.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import statistics

import bcrypt

from .harness import REPO, comm_target, fast_config

CONFIG = fast_config(comm_target("a", "no-such-comm"))


def deep_yaml(levels: int) -> str:
    return "".join(" " * i + "a:\n" for i in range(levels)) + " " * levels + "x\n"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_deeply_nested_config_at_start_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "deep.yaml"
    cfg.write_text(deep_yaml(500))
    r = run_cli("--config", str(cfg))
    assert (r.returncode, r.stderr) == (2, f"{cfg}:64: YAML syntax error: nested deeper than 64 levels\n")


def test_deeply_nested_config_on_reload_keeps_the_reload_thread_alive(exporter):
    e = exporter(CONFIG, extra=["--config.auto-reload-interval", "0"])
    e.wait_ready()
    e.config_path.write_text(deep_yaml(500))
    e.proc.send_signal(signal.SIGHUP)
    e.wait_for(lambda s: s.get("damon_config_last_reload_successful") == 0, timeout=20, what="failed reload")
    assert f"{e.config_path}:64: YAML syntax error: nested deeper than 64 levels" in e.logs()
    # the thread survived: the next SIGHUP with a good config is applied
    e.config_path.write_text(fast_config(comm_target("b", "no-such-comm")))
    e.proc.send_signal(signal.SIGHUP)
    s = e.wait_for(lambda s: s.get("damon_target_processes", target="b") is not None, timeout=20, what="reload after the bad one")
    assert s.get("damon_config_last_reload_successful") == 1
    assert "Traceback" not in e.logs() and "RecursionError" not in e.logs()


def test_backtracking_cmdline_regex_cannot_freeze_the_exporter(exporter):
    """``^(a+)+...$`` against a 51-character command line any local user can choose: with a
    backtracking engine discovery never returns and, holding the GIL, freezes everything."""
    evil = subprocess.Popen(["a" * 50 + "!", "1000"], executable="/bin/sleep")
    good = subprocess.Popen(["aaaa", "1000"], executable="/bin/sleep")
    try:
        time.sleep(0.2)
        cfg = fast_config("  - name: evil\n    match:\n      cmdline: ['^(a+)+( [0-9]+)?$']\n")
        e = exporter(cfg)
        e.wait_ready(timeout=30)
        s = e.wait_for(lambda s: s.get("damon_target_processes", target="evil") == 1, timeout=20, what="the matching process")
        assert s.get("damon_target_processes", target="evil") == 1  # only 'aaaa 1000'
        t = time.monotonic()
        assert e.request("/-/healthy", timeout=5).status == 200
        assert time.monotonic() - t < 2
        e.proc.send_signal(signal.SIGTERM)
        assert e.proc.wait(10) == 0
    finally:
        for p in (evil, good):
            p.kill()
            p.wait()


def _auth_exporter(exporter, tmp_path, rounds: int):
    web = tmp_path / "web.yml"
    h = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=rounds)).decode()
    web.write_text(f"basic_auth_users:\n  alice: '{h}'\n")
    e = exporter(CONFIG, extra=["--web.config.file", str(web)], auth=("alice", "s3cret"))
    e.wait_ready()
    return e


def test_long_password_gets_401_for_unknown_users_too(exporter, tmp_path):
    e = _auth_exporter(exporter, tmp_path, 4)
    for user in ("alice", "nobody"):
        r = e.request("/metrics", auth=(user, "x" * 100))
        assert r.status == 401, user  # the unknown user's connection used to drop
    assert e.request("/metrics").status == 200
    assert "Traceback" not in e.logs()


def test_unknown_user_answers_as_fast_as_a_known_users_wrong_password(exporter, tmp_path):
    """One user at cost 4: an unknown name used to cost a fixed cost-10 check (about 40x
    slower), which told names apart. Now it costs what the configured user costs."""
    e = _auth_exporter(exporter, tmp_path, 4)

    def median_time(user: str) -> float:
        times = []
        for i in range(9):
            t = time.perf_counter()
            assert e.request("/-/healthy", auth=(user, f"wrong{i}")).status == 401
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    known, unknown = median_time("alice"), median_time("mallory")
    assert unknown < 3 * known + 0.010, (known, unknown)
