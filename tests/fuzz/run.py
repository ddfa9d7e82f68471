"""Fuzz one parser (or all) for a bounded time: ``python3 -m tests.fuzz.run [TARGET ...]
[--seconds N] [--seed S]``.

Inputs are the target's corpus (``tests/fuzz/corpus/TARGET/``) mutated the usual ways: bytes
flipped, inserted, deleted or repeated, pieces of two inputs spliced, the interesting bytes
of HTTP, YAML and /proc text (CR, LF, NUL, ':', '(', ')', '\\xe9', '\\xff') dropped in. Each
input that makes a target raise what its parser does not document is written to
``tests/fuzz/findings/TARGET-N`` and counted; the exit status is 1 when there are any. The
test suite runs every target for a fraction of a second (tests/fuzz/test_fuzz.py); a longer
run is for a person, e.g. ``python3 -m tests.fuzz.run --seconds 600``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from tests.fuzz.targets import TARGETS

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
FINDINGS = HERE / "findings"
MAX_INPUT = 64 << 10
INTERESTING = [b"\r", b"\n", b"\r\n", b"\0", b":", b" ", b"(", b")", b"\xe9", b"\xff", b"\t", b"-", b"0", b"9" * 20,
               b"{", b"[", b"&a", b"*a", b"!!", b"%", b"\\"]


def corpus(name: str) -> list[bytes]:
    d = CORPUS / name
    return [p.read_bytes() for p in sorted(d.iterdir())] if d.is_dir() else [b""]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        i = rng.randint(0, len(b))
        if op == 0 and b:  # flip a byte
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:  # insert something that means something to these parsers
            b[i:i] = rng.choice(INTERESTING)
        elif op == 2 and b:  # delete a run
            del b[i:i + rng.randint(1, 16)]
        elif op == 3 and b:  # repeat a run
            j = rng.randint(i, min(len(b), i + 64))
            b[i:i] = b[i:j] * rng.randint(1, 32)
        elif op == 4:  # splice in a piece of another input
            other = rng.choice(pool)
            j = rng.randint(0, len(other))
            b[i:i] = other[j:j + rng.randint(1, 256)]
        else:  # random bytes
            b[i:i] = rng.randbytes(rng.randint(1, 8))
    return bytes(b[:MAX_INPUT])


def fuzz(name: str, target: Callable[[bytes], None], seconds: float, rng: random.Random,
         save: bool = True) -> tuple[int, list[tuple[bytes, str]]]:
    """Run ``target`` on mutated corpus inputs for ``seconds``; (inputs tried, findings)."""
    pool = corpus(name)
    found: list[tuple[bytes, str]] = []
    n = 0
    end = time.monotonic() + seconds
    for data in pool:  # the corpus itself first
        n += 1
        found += _one(target, data)
    while time.monotonic() < end:
        data = mutate(rng, rng.choice(pool), pool)
        n += 1
        found += _one(target, data)
    if save and found:
        FINDINGS.mkdir(exist_ok=True)
        for i, (data, _) in enumerate(found):
            (FINDINGS / f"{name}-{i}").write_bytes(data)
    return n, found


def _one(target: Callable[[bytes], None], data: bytes) -> list[tuple[bytes, str]]:
    try:
        target(data)
    except Exception:  # noqa: BLE001 - every unexpected exception is a finding
        return [(data, traceback.format_exc(limit=3))]
    return []


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tests.fuzz.run", description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="*", choices=[[], *TARGETS], help="default: all")
    p.add_argument("--seconds", type=float, default=10.0, help="per target (default 10)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    total = 0
    for name in args.targets or list(TARGETS):
        n, found = fuzz(name, TARGETS[name], args.seconds, random.Random(seed))
        total += len(found)
        print(f"{name:12} {n:9} inputs  {len(found)} findings  (seed {seed})")
        for data, tb in found[:3]:
            print(f"  input {data[:120]!r}\n  " + tb.replace("\n", "\n  "))
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
