"""A test workload with known memory behaviour, run as a separate process.

It renames itself (``comm``), maps ``--hot-mib`` and ``--cold-mib`` of anonymous memory as
separate mappings (PROT_NONE guard pages between them keep the kernel from merging them),
writes every page once, then keeps writing every page of the hot mappings every
``--period`` seconds. It prints ``ready <hot_bytes> <cold_bytes>`` when all is resident.
``--reserve-mib`` maps more address space that is never touched (not resident), for the
bench's "1 GiB mapped, part resident" targets.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PR_SET_NAME = 15
PAGE = 4096
MIB = 1 << 20


def set_comm(name: str) -> None:
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def map_chunks(total: int, chunks: int) -> list[memoryview]:
    """``chunks`` read-write mappings of ``total/chunks`` bytes each, separated by guards."""
    if total <= 0:
        return []
    size = (total // chunks + PAGE - 1) // PAGE * PAGE
    span = chunks * (size + PAGE) + PAGE
    base = libc.mmap(None, span, 0, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if base in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap failed")
    views = []
    for i in range(chunks):
        addr = base + PAGE + i * (size + PAGE)
        if libc.mprotect(addr, size, mmap.PROT_READ | mmap.PROT_WRITE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
        views.append(memoryview((ctypes.c_char * size).from_address(addr)).cast("B"))
    return views


def touch(views: list[memoryview], value: int) -> None:
    for v in views:
        n = len(v) // PAGE
        v[::PAGE] = bytes([value]) * n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--hot-mib", type=int, default=16)
    ap.add_argument("--cold-mib", type=int, default=48)
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--reserve-mib", type=int, default=0)
    ap.add_argument("--period", type=float, default=0.05)
    a = ap.parse_args()
    set_comm(a.name)
    hot = map_chunks(a.hot_mib * MIB, a.chunks)
    cold = map_chunks(a.cold_mib * MIB, a.chunks)
    if a.reserve_mib:
        map_chunks(a.reserve_mib * MIB, 1)  # read-write, never touched: mapped, not resident
    touch(hot, 1)
    touch(cold, 1)
    print(f"ready {sum(len(v) for v in hot)} {sum(len(v) for v in cold)}", flush=True)
    i = 2
    while True:
        touch(hot, i & 0xFF)
        i += 1
        time.sleep(a.period)


if __name__ == "__main__":
    sys.exit(main())
