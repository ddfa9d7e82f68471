"""Boot the page_idle test kernel under QEMU (virtme-ng, TCG) and run a script in it as root.

Why a harness of our own: the host kernel has no ``/sys/kernel/mm/page_idle``, so the page_idle
backend can only meet a real kernel inside a guest. virtme-ng boots a bzImage with the host's
root file system shared read-only over 9p, so the guest sees the same Python, the same repo
and the same installed packages (``sys.executable`` and the repo path work as they are).

Two facts about virtme-ng here shape this module (see ../shared/kernels/README.md):

- without ``--verbose`` the command's output was lost (virtme-ng falls back to the serial
  console for the script); with it, the output arrives on the console mixed with kernel log
  lines, and ``vng`` itself exits 255 whatever the command returned. So the guest script
  writes its output to a file in a host directory shared read-write (``--rwdir``), and
  prints a marker line ``@@VM-EXIT <rc>@@`` that carries the exit code. The console text is
  kept, without kernel log lines, for diagnostics when a guest never reaches the marker.
- /dev/kvm on these machines cannot run guests: always TCG (``--disable-kvm``), where
  syscalls cost about ten times what they cost on the host. Never assert absolute timings.

Used by ``tests/vm/conftest.py`` and by ``bench/kernel_damon_compare.py``.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KERNEL_ENV = "DAMON_EXPORTER_TEST_KERNEL"

EXIT_MARKER_RE = re.compile(r"@@VM-EXIT (-?\d+)@@")
START_MARKER = "@@VM-START@@"
#: kernel log lines on the console: "[    3.719715] ..."
KERNEL_LOG_RE = re.compile(r"^\[\s*\d+\.\d+\]")


class VMUnavailable(Exception):
    """Something the VM tests need is missing here (message says what and how to get it)."""


def default_kernel_glob() -> str:
    return str(REPO_ROOT.parent / "shared" / "kernels" / "bzImage-*")


def find_kernel() -> Path:
    """The test kernel: ``$DAMON_EXPORTER_TEST_KERNEL``, else ``<repo>/../shared/kernels/bzImage-*``
    (the last in sort order, so that a newer build wins)."""
    env = os.environ.get(KERNEL_ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise VMUnavailable(f"{KERNEL_ENV}={env} is not a file")
        return p
    found = sorted(glob.glob(default_kernel_glob()))
    if not found:
        raise VMUnavailable(
            f"no test kernel: set {KERNEL_ENV} or put a bzImage at {default_kernel_glob()} "
            "(scripts/build-test-kernel builds one)"
        )
    return Path(found[-1])


def find_vng() -> str:
    """The ``vng`` executable: on PATH, or next to this Python (a venv or pyenv install whose
    bin directory is not on PATH)."""
    exe = shutil.which("vng") or shutil.which("vng", path=str(Path(sys.executable).parent))
    if not exe:
        raise VMUnavailable("virtme-ng is not installed (pip install virtme-ng)")
    return exe


def find_qemu() -> str:
    exe = shutil.which("qemu-system-x86_64")
    if not exe:
        raise VMUnavailable("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    return exe


def kernel_release(bzimage: Path) -> str:
    """The release (``uname -r``) a bzImage will report, from its x86 boot header:
    the 16-bit word at 0x20E points (relative to 0x200) at the version string."""
    with open(bzimage, "rb") as f:
        head = f.read(0x10000)
    if head[0x202:0x206] != b"HdrS":
        raise VMUnavailable(f"{bzimage} is not an x86 bzImage (no HdrS boot header)")
    (ptr,) = struct.unpack_from("<H", head, 0x20E)
    off = ptr + 0x200
    if not ptr or off >= len(head):
        raise VMUnavailable(f"{bzimage}: boot header has no kernel version string")
    return head[off:].split(b"\0", 1)[0].split(b" ", 1)[0].decode()


@dataclass(frozen=True)
class GuestRun:
    """What one guest run produced."""

    output: str  # the command's stdout+stderr, as written to the shared directory
    exit_code: int | None  # from the @@VM-EXIT marker; None if the guest never printed it
    console: str  # console text without kernel log lines (diagnostics)
    seconds: float  # wall time of the whole boot-run-poweroff
    timed_out: bool
    started: bool = True  # the guest reached our script (else: a boot failure)
    raw_console: str = ""  # the whole console, kernel log included
    boots: int = 1  # boot attempts (a guest that never reached the script is booted again)

    def describe(self) -> str:
        """A failure message with enough context to debug a guest that went wrong."""
        state = "timed out" if self.timed_out else f"exit code {self.exit_code}"
        if not self.started:
            tail = "\n".join(self.raw_console.splitlines()[-80:])
            return f"guest never started the command ({self.boots} boots, {state}); console:\n{tail}"
        tail = "\n".join((self.output or self.console).splitlines()[-60:])
        return f"guest {state} after {self.seconds:.0f}s; last output:\n{tail}"


def strip_kernel_log(console: str) -> str:
    return "\n".join(line for line in console.splitlines() if not KERNEL_LOG_RE.match(line))


def parse_exit_code(console: str) -> int | None:
    """The exit code the guest reported; the *last* marker wins (the command's own output
    could contain an earlier one)."""
    codes = EXIT_MARKER_RE.findall(console)
    return int(codes[-1]) if codes else None


def run_in_guest(
    command: str,
    *,
    kernel: Path | None = None,
    timeout: float = 600,
    memory: str = "2G",
    cpus: int = 2,
    shared_dir: Path | None = None,
    env: dict[str, str] | None = None,
    boot_attempts: int = 2,
) -> GuestRun:
    """Boot the test kernel, run ``command`` (a POSIX shell script) as root, power off.

    ``shared_dir`` (a host directory, created if missing) is mounted read-write at the same
    path in the guest; the command's output file lives there, and the command may leave
    results there. ``env`` is exported in the guest before the command runs; ``PYTHONPATH``
    always includes the repo and ``PATH`` the directory of this Python. The guest is killed
    after ``timeout`` seconds (qemu included: it runs in our process group). A guest that
    never reaches the command (a boot failure) is booted again, up to ``boot_attempts``.
    """
    kernel = kernel or find_kernel()
    vng = find_vng()
    find_qemu()
    own_dir = shared_dir is None
    shared = Path(tempfile.mkdtemp(prefix="damon-vm-")) if own_dir else Path(shared_dir)
    shared.mkdir(parents=True, exist_ok=True)
    shared = shared.resolve()
    try:
        run = _run(command, vng, kernel, timeout, memory, cpus, shared, env or {})
        for boot in range(2, boot_attempts + 1):
            if run.started or run.timed_out:
                break
            # Seen once in ~40 boots here: the kernel booted but virtme-ng's init never ran
            # the script. That is no result of the command; boot again.
            run = _run(command, vng, kernel, timeout, memory, cpus, shared, env or {})
            run = dataclasses.replace(run, boots=boot)
        return run
    finally:
        if own_dir:
            shutil.rmtree(shared, ignore_errors=True)


def _run(command: str, vng: str, kernel: Path, timeout: float, memory: str, cpus: int,
         shared: Path, env: dict[str, str]) -> GuestRun:
    out_file = shared / "guest-output.txt"
    cmd_file = shared / "guest-command.sh"
    wrapper = shared / "guest-wrapper.sh"
    out_file.unlink(missing_ok=True)
    cmd_file.write_text(command)
    exports = {
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DAMON_EXPORTER_IN_TEST_VM": "1",
        **env,
    }
    lines = ["#!/bin/sh", f"echo {START_MARKER}", "cd /tmp"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    lines += [
        f"sh {shlex.quote(str(cmd_file))} > {shlex.quote(str(out_file))} 2>&1",
        "rc=$?",
        # the output file is what we parse; echo its tail on the console as well, so a
        # failure is visible even in a raw console log
        f"tail -n 40 {shlex.quote(str(out_file))}",
        "sync",
        'echo "@@VM-EXIT $rc@@"',
    ]
    wrapper.write_text("\n".join(lines) + "\n")
    argv = [
        vng, "--disable-kvm", "--run", str(kernel), "--memory", memory, "--cpus", str(cpus),
        "--verbose", "--rwdir", str(shared),
        "--exec", f"sh {shlex.quote(str(wrapper))}",
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=shared, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    timed_out = False
    try:
        raw, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        raw, _ = proc.communicate()
    seconds = time.monotonic() - t0
    console = raw.decode(errors="replace")
    try:
        output = out_file.read_text(errors="replace")
    except OSError:
        output = ""
    return GuestRun(
        output=output,
        exit_code=None if timed_out else parse_exit_code(console),
        console=strip_kernel_log(console),
        seconds=seconds,
        timed_out=timed_out,
        started=START_MARKER in console,
        raw_console=console,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill vng and the qemu it started (same process group, which we created)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def build_workload(dest_dir: Path) -> Path:
    """tests/workloads/workload.c, compiled on the host (see tests.support.workloads), and
    filetouch.c beside it (the guest's checks find it there)."""
    from tests.support.workloads import WorkloadBuildError, build_workload as build

    try:
        build("filetouch.c", dest_dir)
        return Path(build("workload.c", dest_dir))
    except WorkloadBuildError as e:
        raise VMUnavailable(str(e)) from None
