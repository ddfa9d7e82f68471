"""Whether a process ran between two reads (exporter/procfs/activity.py), on this host's /proc
and on fake trees for what the host cannot produce at will."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from exporter.procfs.activity import MAX_THREADS, thread_runtimes
from exporter.procfs.io import PosixIO

IO = PosixIO()


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_stopped_process_reads_the_same_and_a_running_one_does_not():
    busy = _child("import threading\n\ndef spin():\n    while True:\n        pass\n\n"
                  "threading.Thread(target=spin).start()\nspin()")
    try:
        time.sleep(0.5)
        a = thread_runtimes(IO, "/proc", busy.pid)
        time.sleep(0.2)
        b = thread_runtimes(IO, "/proc", busy.pid)
        assert a is not None and b is not None and len(a) == 2 and a != b
        os.kill(busy.pid, signal.SIGSTOP)
        time.sleep(0.2)  # a stop takes effect at the threads' next return to user space
        a = thread_runtimes(IO, "/proc", busy.pid)
        time.sleep(0.3)
        b = thread_runtimes(IO, "/proc", busy.pid)
        assert a == b and a is not None and all(ns > 0 for _, ns in a)
    finally:
        busy.kill()
        busy.wait()


def test_a_new_thread_changes_the_reading():
    # the parent blocks on a pipe between the two reads, then starts a thread that exits at once
    r, w = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", f"import os, threading\nos.read({r}, 1)\n"
                              "threading.Thread(target=lambda: None).start()\nos.read({r}, 1)".replace("{r}", str(r))],
                             pass_fds=(r,))
    try:
        time.sleep(0.5)
        a = thread_runtimes(IO, "/proc", child.pid)
        os.write(w, b"x")
        time.sleep(0.3)
        b = thread_runtimes(IO, "/proc", child.pid)
        assert a is not None and b is not None and a != b
    finally:
        child.kill()
        child.wait()
        os.close(r)
        os.close(w)


def _fake(tmp_path, threads: dict[str, bytes]) -> str:
    for tid, text in threads.items():
        d = tmp_path / "42" / "task" / tid
        d.mkdir(parents=True)
        (d / "schedstat").write_bytes(text)
    return str(tmp_path)


def test_more_threads_than_the_bound_prove_nothing(tmp_path):
    root = _fake(tmp_path, {str(100 + i): b"%d 0 1\n" % i for i in range(MAX_THREADS + 1)})
    assert thread_runtimes(IO, root, 42) is None
    assert thread_runtimes(IO, root, 42, max_threads=MAX_THREADS + 1) == tuple((100 + i, i) for i in range(MAX_THREADS + 1))


def test_a_schedstat_that_cannot_be_read_proves_nothing(tmp_path):
    assert thread_runtimes(IO, _fake(tmp_path / "a", {"7": b"12 0 1\n", "8": b"garbage\n"}), 42) is None
    assert thread_runtimes(IO, _fake(tmp_path / "b", {"7": b""}), 42) is None
    assert thread_runtimes(IO, str(tmp_path / "none"), 42) is None  # gone, or no /proc


def test_a_process_with_many_threads_is_listed_only_past_the_bound(tmp_path, monkeypatch):
    import exporter.procfs.activity as mod

    root = _fake(tmp_path, {str(100 + i): b"1 0 1\n" for i in range(4 * MAX_THREADS)})
    taken = []
    scandir = os.scandir

    class Counting:
        def __init__(self, path):
            self.it = scandir(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.it.close()

        def __iter__(self):
            for e in self.it:
                taken.append(e.name)
                yield e

    monkeypatch.setattr(mod.os, "scandir", Counting)
    assert thread_runtimes(IO, root, 42) is None
    assert len(taken) == MAX_THREADS + 1  # not the 1024 entries of the directory
