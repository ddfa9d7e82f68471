"""Round 3, finding 1: a process that matches a target execs another program between its
discovery and the exporter's first write to it.

Exec keeps the pid and the start time, so a check of (pid, start time) passes and the
clear of ``/proc/PID/clear_refs`` used to land on the new program, a process no target
names. Here the sequence is forced rather than raced: a decoy (comm ``decoy30x``) is
discovered, then execs a victim that writes 32 MiB and watches its own ``Referenced``
(``/proc/self/smaps_rollup``) from inside; then the engine takes its first step. Every try
hits the window, so before the image check every try cleared the victim (32 MiB referenced
fell to about 100 kB).

Threshold: the victim's Referenced must stay above half of what it was. Nothing but a
clear of its page tables takes 16 MiB of freshly written, never-unmapped anonymous memory
out of Referenced within the tenth of a second a try lasts (reclaim would need memory
pressure on a 24 GiB machine; the host's kdamond ages pages through the rmap, which keeps
them counted as young), so a false failure needs that to happen in one of the tries.
"""

from __future__ import annotations

import os
import subprocess
import sys

from exporter.config import parse_config
from exporter.discovery import Discoverer
from exporter.engines.clear_refs.engine import ReferencedBytesEngine
from exporter.engines.clear_refs.smaps import ProcSmaps
from exporter.model.attrs import MonitoringAttrs

TRIES = 20
COMM = "decoy30x"

VICTIM = r"""
import re, sys
buf = bytearray(32 << 20)
for i in range(0, len(buf), 4096):
    buf[i] = 1
with open("/proc/self/comm", "w") as f:
    f.write("victim")
def referenced():
    with open("/proc/self/smaps_rollup", "rb") as f:
        return int(re.search(rb"^Referenced:\s+(\d+)", f.read(), re.M)[1])
print(referenced(), flush=True)
for _ in sys.stdin:
    print(referenced(), flush=True)
"""

DECOY = f"""
import os, sys
with open("/proc/self/comm", "w") as f:
    f.write({COMM!r})
print("ready", flush=True)
sys.stdin.readline()
os.execv(sys.executable, [sys.executable, "-c", {VICTIM!r}])
"""


def _engine() -> ReferencedBytesEngine:
    """The engine on the real /proc, its clock stepped by the sleeps it asks for: every
    step is an aggregation."""
    now = [0.0]
    engine = ReferencedBytesEngine(ProcSmaps(), MonitoringAttrs(sample_interval=0.01, aggregation_interval=0.01, update_interval=1.0),
                                   clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    engine.set_horizons([1.0], returns_after=0.0)
    return engine


def test_a_process_that_execs_after_discovery_is_never_cleared_nor_published():
    config = parse_config(f"targets: [{{name: decoy, match: {{comm: [{COMM}]}}}}]\n")
    cleared, published, counted = [], 0, 0
    for _ in range(TRIES):
        decoy = subprocess.Popen([sys.executable, "-c", DECOY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert decoy.stdout.readline() == "ready\n"
            (spec,) = Discoverer(config, self_pid=os.getpid()).discover()
            assert [r.pid for r in spec.processes] == [decoy.pid]
            decoy.stdin.write("exec\n")
            decoy.stdin.flush()
            before = int(decoy.stdout.readline())  # the victim runs: its 32 MiB just written
            engine = _engine()
            engine.set_targets([spec])
            agg = engine.step()
            decoy.stdin.write("\n")
            decoy.stdin.flush()
            after = int(decoy.stdout.readline())
            if after < before // 2:
                cleared.append((before, after))
            published += bool(agg is None or agg.targets[0].regions)
            counted += dict(engine.stats().errors_total).get("exec", 0)
            engine.close()
        finally:
            decoy.kill()
            decoy.wait()
    assert cleared == [], f"{len(cleared)} of {TRIES} victims had their Referenced cleared (kB before, after): {cleared}"
    assert published == 0  # no figure of a victim under the decoy's target
    assert counted == TRIES  # damon_sampler_errors_total{kind="exec"}, once per try
