"""Checks run inside the test VM against the physical reference (tests/vm/physical_reference.py).

Run as ``python -m tests.vm.real_checks --workload BIN --out FILE [CHECK ...]`` in the guest
(test_vm_real_programs.py boots once and runs them all). Like guest_checks.py, the guest
records measurements and the truth; the host-side tests judge. The reference and the engines
never run at the same time: each marks pages idle, and the other would read its marks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Callable

from tests.vm import physical_reference
from tests.vm.guest_checks import THP_ENABLED, Workload, require_test_guest

MiB = 1 << 20


def _buffers(w: Workload) -> dict[int, list[tuple[int, int]]]:
    """Each ready process' buffer, as the reference's address ranges."""
    return {r["pid"]: [(r["addr"], r["addr"] + r["size"])] for r in w.ready}


def check_reference_exact(ctx: dict) -> dict:
    """The reference on a process with a known touched set: 64 MiB resident, 16 MiB of it
    written every pass (TLB flushed per pass), over its buffer and over the whole process."""
    w = Workload(ctx["binary"], "--size", "64", "--hot", "16", "--hot-offset", "24")
    try:
        r = w.ready[0]
        time.sleep(1.0)  # a few passes over the hot part
        buf = physical_reference.take(w.pids, 5.0, _buffers(w))
        whole = physical_reference.take(w.pids, 5.0)
    finally:
        w.stop()
    return {"truth": {"resident": r["size"], "working_set": r["hot_size"]},
            "buffer": buf.to_dict(), "whole": whole.to_dict()}


def check_reference_readers(ctx: dict) -> dict:
    """Frames counted once: a parent writes 32 MiB and forks 3 readers of its top 8 MiB."""
    w = Workload(ctx["binary"], "--size", "32", "--hot", "8", "--readers", "3", nready=4)
    try:
        time.sleep(1.0)
        ref = physical_reference.take(w.pids, 5.0, _buffers(w))
        parent = next(r for r in w.ready if r.get("readers"))
    finally:
        w.stop()
    return {"truth": {"resident": parent["size"], "working_set": parent["hot_size"]},
            "buffer": ref.to_dict(), "processes": len(w.pids)}


CHECKS: dict[str, Callable[[dict], dict]] = {
    "reference_exact": check_reference_exact,
    "reference_readers": check_reference_readers,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("checks", nargs="*")
    args = ap.parse_args(argv)
    require_test_guest()
    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        ap.error(f"unknown checks: {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    with open(THP_ENABLED, "w") as f:
        f.write("madvise")
    ctx = {"binary": args.workload}
    results: dict[str, dict] = {}
    for name in args.checks or list(CHECKS):
        t0 = time.monotonic()
        try:
            res = CHECKS[name](ctx)
        except Exception:
            res = {"error": traceback.format_exc()}
        res["check_seconds"] = round(time.monotonic() - t0, 1)
        results[name] = res
        print(f"check {name}: {res['check_seconds']}s{' ERROR' if 'error' in res else ''}", flush=True)
        with open(args.out + ".tmp", "w") as f:
            json.dump(results, f)
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
