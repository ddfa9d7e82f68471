"""The syscalls every /proc reader makes, and how their errors become the model's.

Every syscall goes through a small :class:`PosixIO` object so that tests can substitute one
that emulates kernel semantics a plain file cannot (the page_idle bitmap, a pagemap fd whose
process has exited). ``OSError`` becomes :class:`~exporter.model.errors.ProcessGone`,
:class:`~exporter.model.errors.AccessDenied` or an I/O error in :func:`ops_error`.
"""

from __future__ import annotations

import errno
import os
import re
from array import array

from exporter.model.errors import AccessDenied, OpsError, ProcessGone

_NATIVE_U64 = "Q"
assert array(_NATIVE_U64).itemsize == 8


def decode_name(raw: bytes) -> str:
    """A name the kernel hands over (comm, exe, cmdline, cgroup path) as text.

    Linux names are bytes, not UTF-8. Every name that leaves /proc is decoded here, the one
    way: bytes that are not UTF-8 become ``\\xNN`` escapes, so the text is always valid
    UTF-8 (a label value, a landing-page cell) and two names that differ in such bytes stay
    different.
    """
    return raw.decode("utf-8", "backslashreplace")


def u64s(buf: bytes) -> array:
    """Native-endian u64 values of a kernel buffer (pagemap, kpageflags, bitmap words)."""
    a = array(_NATIVE_U64)
    a.frombytes(buf[: len(buf) - len(buf) % 8])
    return a


# -- syscalls --------------------------------------------------------------------------------


class PosixIO:
    """The handful of syscalls the backends make. Tests substitute a subclass that emulates
    kernel semantics for some paths; production uses this one as is."""

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags | os.O_CLOEXEC)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def close(self, fd: int) -> None:
        os.close(fd)

    def read_file(self, path: str, limit: int | None = None) -> bytes:
        """Whole file in one go (at most ``limit`` bytes): /proc files are generated per
        read() call, so we read with a large buffer until EOF rather than line by line."""
        fd = self.open(path, os.O_RDONLY)
        try:
            chunks = []
            left = limit if limit is not None else -1
            while left != 0:
                b = os.read(fd, 1 << 20 if left < 0 else min(left, 1 << 20))
                if not b:
                    break
                chunks.append(b)
                if left > 0:
                    left -= len(b)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_chunks(self, path: str, size: int = 1 << 20):
        """The file in ``size``-byte reads, one at a time (for /proc files too large to hold
        whole: a process' smaps). The file is opened before the first chunk is asked for."""
        fd = self.open(path, os.O_RDONLY)

        def chunks():
            try:
                while True:
                    b = os.read(fd, size)
                    if not b:
                        return
                    yield b
            finally:
                os.close(fd)

        return chunks()

    def readlink(self, path: str) -> bytes:
        return os.readlink(path.encode())

    def exists(self, path: str) -> bool:
        return os.path.exists(path)


# -- errors ----------------------------------------------------------------------------------

_GONE_ERRNOS = {errno.ENOENT, errno.ESRCH}
_DENIED_ERRNOS = {errno.EACCES, errno.EPERM}


def ops_error(e: OSError, pid: int, path: str, denied_hint: str) -> OpsError:
    """The backend error for an OSError met while reading ``path`` of process ``pid``.

    ENOENT/ESRCH: the process is gone. EACCES/EPERM: ``denied_hint`` names the privilege.
    Anything else is an I/O error with the path and the kernel's words.
    """
    if e.errno in _GONE_ERRNOS:
        return ProcessGone(f"process {pid} exited")
    if e.errno in _DENIED_ERRNOS:
        return AccessDenied(f"cannot access {path}: {os.strerror(e.errno)}; {denied_hint}")
    return OpsError(f"cannot read {path}: {e.strerror or e}")


# -- capabilities ----------------------------------------------------------------------------

CAP_SYS_ADMIN = 21


def effective_caps(io: PosixIO, proc_root: str) -> int | None:
    """CapEff of this process (from ``{proc_root}/self/status``), None if unreadable."""
    try:
        data = io.read_file(f"{proc_root}/self/status")
    except OSError:
        return None
    m = re.search(rb"^CapEff:\s*([0-9a-fA-F]+)", data, re.M)
    return int(m[1], 16) if m else None
