"""Round 3, finding 1: a process that matches a target execs another program between its
discovery and the exporter's first write to it.

Exec keeps the pid and the start time, so a check of (pid, start time) passes and the
clear of ``/proc/PID/clear_refs`` used to land on the new program, a process no target
names. Here the sequence is forced rather than raced: a decoy (a comm of its own) is
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
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from exporter.config import parse_config
from exporter.discovery import Discoverer
from exporter.engines.clear_refs.engine import ReferencedBytesEngine
from exporter.engines.clear_refs.smaps import ProcSmaps
from exporter.model.attrs import MonitoringAttrs
from tests.support.exporter import unique_comm
from tests.support.workloads import build_workload

TRIES = 20
COMM = unique_comm("decoy")  # no other run's decoy is matched

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


def _engine(now: list[float] | None = None) -> ReferencedBytesEngine:
    """The engine on the real /proc, its clock (``now[0]``) stepped by the sleeps it asks
    for: every step is an aggregation; a clear period is 1 s."""
    now = now if now is not None else [0.0]
    engine = ReferencedBytesEngine(ProcSmaps(), MonitoringAttrs(sample_interval=0.01, aggregation_interval=0.01, update_interval=1.0),
                                   clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    engine.set_horizons([1.0], returns_after=0.0)
    return engine


def _referenced(victim: subprocess.Popen) -> int:
    victim.stdin.write("\n")
    victim.stdin.flush()
    return int(victim.stdout.readline())


@dataclass
class Tally:
    """What the tries saw: victims cleared (Referenced before, after), aggregations that
    published anything of a victim, exec errors counted."""

    cleared: list[tuple[int, int]] = field(default_factory=list)
    published: int = 0
    counted: int = 0

    def step(self, engine: ReferencedBytesEngine, victim: subprocess.Popen, before: int) -> None:
        """The engine's step after the exec, then what the victim says of its Referenced."""
        agg = engine.step()
        after = _referenced(victim)
        if after < before // 2:
            self.cleared.append((before, after))
        self.published += bool(agg is None or agg.targets[0].regions)
        self.counted += dict(engine.stats().errors_total).get("exec", 0)
        engine.close()

    def check(self, tries: int) -> None:
        assert self.cleared == [], f"{len(self.cleared)} of {tries} victims had their Referenced cleared (kB before, after): {self.cleared}"
        assert self.published == 0  # no figure of a victim under the decoy's target
        assert self.counted == tries  # damon_sampler_errors_total{kind="exec"}, once per try


def test_a_process_that_execs_after_discovery_is_never_cleared_nor_published():
    config = parse_config(f"targets: [{{name: decoy, match: {{comm: [{COMM}]}}}}]\n")
    tally = Tally()
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
            tally.step(engine, decoy, before)
        finally:
            decoy.kill()
            decoy.wait()
    tally.check(TRIES)


def test_an_exec_after_the_pin_is_seen_where_the_address_space_lives_on(tmp_path):
    """The decoy shares its address space with its parent (clone(CLONE_VM), see
    tests/workloads/vmshare.c): after its exec the pagemap fd pinned on that address space
    still reads, so only the image check at the write and the read can tell. The engine
    clears the decoy once (its own memory), the decoy execs the victim, and the engine's
    next step ends the clear period: it would read the victim's smaps and clear it."""
    vmshare = build_workload("vmshare.c", tmp_path)
    config = parse_config(f"targets: [{{name: decoy, match: {{comm: [{COMM}]}}}}]\n")
    tally = Tally()
    for _ in range(TRIES // 2):
        proc = subprocess.Popen([vmshare, COMM, sys.executable, "-c", VICTIM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        child = int(proc.stdout.readline())
        try:
            (spec,) = Discoverer(config, self_pid=os.getpid()).discover()
            assert [r.pid for r in spec.processes] == [child]
            now = [0.0]
            engine = _engine(now)
            engine.set_targets([spec])
            assert engine.step() is not None  # the first clear: the decoy's own memory
            proc.stdin.write("exec\n")
            proc.stdin.flush()
            before = int(proc.stdout.readline())
            now[0] += 2.0  # past the clear period: the next step reads and clears
            tally.step(engine, proc, before)
        finally:
            os.kill(child, signal.SIGKILL)  # while its parent lives to reap it: never a reused pid
            proc.kill()
            proc.wait()
    tally.check(TRIES // 2)
