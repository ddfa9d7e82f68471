"""The harness' host-side parsing and discovery (no boot)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import harness


def test_exit_marker_parsing_keeps_the_last_marker() -> None:
    console = "[    1.0] boot\n@@VM-EXIT 99@@ echoed by the command\nhello\n@@VM-EXIT 7@@\n[    2.0] reboot: Power down\n"
    assert harness.parse_exit_code(console) == 7
    assert harness.parse_exit_code("no marker") is None
    assert harness.parse_exit_code("@@VM-EXIT -1@@") == -1


def test_kernel_log_lines_are_stripped() -> None:
    console = "[    1.000000] virtme-ng-init: boot\nhello\n[   12.5] reboot: Power down\n[not a timestamp]\n"
    assert harness.strip_kernel_log(console) == "hello\n[not a timestamp]"


def test_kernel_from_env_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(harness.KERNEL_ENV, str(tmp_path / "missing"))
    with pytest.raises(harness.VMUnavailable, match=r"DAMON_EXPORTER_TEST_KERNEL=.*missing is not a file"):
        harness.find_kernel()


def test_kernel_release_needs_a_bzimage(tmp_path: Path) -> None:
    fake = tmp_path / "bzImage"
    fake.write_bytes(b"\0" * 4096)
    with pytest.raises(harness.VMUnavailable, match="is not an x86 bzImage"):
        harness.kernel_release(fake)


def test_kernel_release_of_a_bzimage_header(tmp_path: Path) -> None:
    # a minimal x86 boot header: "HdrS" at 0x202, version pointer (minus 0x200) at 0x20E
    img = bytearray(0x1000)
    img[0x202:0x206] = b"HdrS"
    img[0x20E:0x210] = (0x300).to_bytes(2, "little")
    version = b"6.12.117 (root@vm) #1 SMP PREEMPT_DYNAMIC\0"
    img[0x500 : 0x500 + len(version)] = version
    fake = tmp_path / "bzImage"
    fake.write_bytes(bytes(img))
    assert harness.kernel_release(fake) == "6.12.117"


def test_a_guest_that_never_started_the_command_is_booted_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runs = iter([
        harness.GuestRun("", None, "", 9.0, False, started=False, raw_console="Booting the kernel"),
        harness.GuestRun("hi\n", 0, "", 12.0, False),
    ])
    calls = []

    def fake_run(*args: object) -> harness.GuestRun:
        calls.append(args)
        return next(runs)

    monkeypatch.setattr(harness, "find_vng", lambda: "/bin/false")
    monkeypatch.setattr(harness, "find_qemu", lambda: "/bin/false")
    monkeypatch.setattr(harness, "_run", fake_run)
    run = harness.run_in_guest("echo hi", kernel=tmp_path / "bzImage", shared_dir=tmp_path)
    assert len(calls) == 2
    assert (run.exit_code, run.boots, run.output) == (0, 2, "hi\n")


def test_a_failed_command_is_not_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []

    def fake_run(*args: object) -> harness.GuestRun:
        calls.append(args)
        return harness.GuestRun("boom\n", 1, "", 12.0, False)

    monkeypatch.setattr(harness, "find_vng", lambda: "/bin/false")
    monkeypatch.setattr(harness, "find_qemu", lambda: "/bin/false")
    monkeypatch.setattr(harness, "_run", fake_run)
    run = harness.run_in_guest("false", kernel=tmp_path / "bzImage", shared_dir=tmp_path)
    assert len(calls) == 1 and run.exit_code == 1
    assert run.describe().startswith("guest exit code 1 after 12s; last output:\nboom")


def test_skipped_vm_tests_are_reported_loudly():
    """Without a kernel (and outside CI) the VM tests skip, and the run ends with a banner
    naming the reason and the variable that points them at a kernel."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env[harness.KERNEL_ENV] = "/nonexistent/bzImage"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/vm/test_vm_smoke.py"],
                       cwd=harness.REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VM TESTS SKIPPED: page_idle and kernel DAMON were NOT checked on a real kernel" in r.stdout
    assert "reason: DAMON_EXPORTER_TEST_KERNEL=/nonexistent/bzImage is not a file" in r.stdout
    assert "DAMON_EXPORTER_TEST_KERNEL=/path/to/bzImage python3 -m pytest tests/vm" in r.stdout
