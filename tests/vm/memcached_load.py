"""Load for memcached in the test guest: fill it, then read a scattered hot subset of its keys.

``python -m tests.vm.memcached_load --port P --keys N --value BYTES --hot SHARE --seed S``
stores N keys (``k0000000``...) of BYTES each, in key order, so that consecutive keys sit
side by side in memcached's slab pages; then draws a random SHARE of the keys (seeded) and
reads them, pass after pass (``--pause`` seconds apart), each in a new random order, forever. The hot items are
thus scattered over every slab page, as a real cache's popular keys are. memaslap (Debian's
libmemcached-tools, installed as ``memcaslap``) generates its own keys and cannot read a
chosen subset of stored ones, hence this client. Prints ``READY {json}`` once filled and one
``PASS {json}`` per completed read pass (seconds it took), for the check to see a pass is
shorter than its window.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time


def _recv_until(sock: socket.socket, buf: bytearray, token: bytes) -> None:
    while not buf.endswith(token):
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("memcached closed the connection")
        buf += chunk


def fill(sock: socket.socket, keys: int, value: bytes, batch: int = 200) -> None:
    """Store every key (pipelined, a batch at a time, each acknowledged)."""
    for first in range(0, keys, batch):
        n = min(batch, keys - first)
        sock.sendall(b"".join(b"set k%07d 0 0 %d\r\n%s\r\n" % (i, len(value), value) for i in range(first, first + n)))
        buf = bytearray()
        while buf.count(b"\r\n") < n:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("memcached closed the connection")
            buf += chunk
        if buf.count(b"STORED") != n:
            raise RuntimeError(f"memcached refused a set: {bytes(buf[:200])!r}")


def read_pass(sock: socket.socket, hot: list[int], rng: random.Random, batch: int = 20) -> None:
    order = hot[:]
    rng.shuffle(order)
    for first in range(0, len(order), batch):
        keys = b" ".join(b"k%07d" % i for i in order[first : first + batch])
        sock.sendall(b"get " + keys + b"\r\n")
        buf = bytearray()
        _recv_until(sock, buf, b"END\r\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--value", type=int, default=1000)
    ap.add_argument("--hot", type=float, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pause", type=float, default=0.2, help="seconds between passes")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    sock = socket.create_connection(("127.0.0.1", args.port))
    t0 = time.monotonic()
    fill(sock, args.keys, bytes(rng.choice(b"abcdefghij") for _ in range(args.value)))
    hot = [i for i in range(args.keys) if rng.random() < args.hot]
    print("READY " + json.dumps({"keys": args.keys, "hot_keys": len(hot), "fill_seconds": round(time.monotonic() - t0, 1)}),
          flush=True)
    while True:
        t = time.monotonic()
        read_pass(sock, hot, rng)
        print("PASS " + json.dumps({"seconds": round(time.monotonic() - t, 2)}), flush=True)
        time.sleep(args.pause)


if __name__ == "__main__":
    sys.exit(main())
