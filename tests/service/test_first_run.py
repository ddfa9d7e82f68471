"""A first run with no config file: the embedded default config watches the programs with
the most resident memory, and the landing page and the log say that it is the default and
how to write a real config.

The exporter runs for real (clear_refs), but on a /proc that holds only this test's children
(``--path.procfs``, symlinks to their real /proc entries): the default config would otherwise
watch, and reset the accessed bits of, the largest programs of whoever else uses the machine.
And on an empty sysfs (``--path.sysfs``): ``auto`` must not take the host's kernel DAMON
(it would write below /sys/kernel/mm/damon whenever no kdamond happens to be configured).
"""

from __future__ import annotations

import re
import signal
from html import unescape

import pytest

from tests.support.exporter import unique_comm
from .test_landing import rows


@pytest.mark.slow  # the default's first aggregation comes after 10 s
def test_no_config_file_watches_the_largest_programs_and_says_so(exporter, children, tmp_path):
    big = children(unique_comm("fbig"), hot_mib=8, cold_mib=56)
    small = children(unique_comm("fsmall"), hot_mib=4, cold_mib=4)
    fake = tmp_path / "proc"
    fake.mkdir()
    (fake / "self").symlink_to("/proc/self")  # the clear_refs backend probes it
    for c in (big, small):
        (fake / str(c.pid)).symlink_to(f"/proc/{c.pid}")
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    web = tmp_path / "web.yml"  # no TLS, no users: there only so that SIGHUP's handling shows
    web.write_text("# no TLS, no users\n")
    e = exporter(None, extra=["--path.procfs", str(fake), "--path.sysfs", str(sysfs), "--web.config.file", str(web)])
    e.wait_ready(timeout=30)
    s = e.wait_for(lambda s: s.get("damon_target_up", target=big.name) == 1, timeout=30, what="the largest program up")
    assert s.get("damon_resident_bytes", target=big.name) > 48 << 20
    assert s.get("damon_target_processes", target=small.name) == 1  # under the cap of 10: both
    assert s.get("damon_sampler_backend_info", backend="clear_refs") == 1
    page = e.request("/")
    assert page.status == 200
    text = unescape(page.text)
    assert "No config file: the embedded default config is in use." in text
    assert "--config.file FILE" in text and "config.example.yaml" in text and "README.md#configuration" in text
    assert 'name: "{{.Comm}}"' in text and "keep_groups: largest" in text  # the default, to copy
    shown = {r[0]: r for r in rows(page.body)}
    assert shown[big.name][3] == "up"
    assert re.fullmatch(r"\d+\.\d MiB", shown[big.name][4]) and float(shown[big.name][4].split()[0]) > 48
    logs = e.logs()
    assert re.search(r'level=info .*msg="no --config.file given: running the embedded default config, the 10 programs '
                     r'with the most resident memory.*config.example.yaml.* config="embedded default"', logs), logs
    assert "config reload" not in logs
    # SIGHUP has no file to reload: the web config is re-checked, the default stays, nothing fails
    checked = e.scrape().get("damon_web_config_last_reload_success_timestamp_seconds")
    e.proc.send_signal(signal.SIGHUP)
    e.wait_for(lambda s: s.get("damon_web_config_last_reload_success_timestamp_seconds") > checked, timeout=20,
               what="the web config re-checked on SIGHUP")
    assert e.proc.poll() is None and e.request("/-/healthy").status == 200
    assert e.scrape().get("damon_config_last_reload_successful") == 1
    assert "reload failed" not in e.logs() and "Traceback" not in e.logs()


def test_a_config_file_means_no_default_notice(exporter, tmp_path):
    from tests.support.exporter import comm_target, fast_config

    (tmp_path / "sys").mkdir()  # no kernel DAMON for auto to take (see above)
    e = exporter(fast_config(comm_target("a", "no-such-comm")), extra=["--path.sysfs", str(tmp_path / "sys")])
    e.wait_ready()
    assert "embedded default config" not in e.request("/").text
    assert "embedded default" not in e.logs()


def test_an_empty_config_file_flag_is_an_error_not_the_default():
    import subprocess
    import sys

    from tests.support.exporter import REPO

    r = subprocess.run([sys.executable, "-m", "exporter", "--config.file", ""], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr == "damon-exporter: error: --config.file is empty (leave the flag out to run the embedded default config)\n"
