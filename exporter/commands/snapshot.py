"""``damon-exporter snapshot``: monitor some processes for a while and print what was seen.

The one-shot twin of the exporter, for a person at a terminal (``--format table``: summary
and heatmap), a script (``json``) or a check of the metrics contract (``prometheus``). It
drives the backend's engine directly, one target made of all the given processes, and
keeps every aggregation's summary (a *recording*: one frame per aggregation) for the
heatmap.

Exit codes: 0 success; 2 usage errors (bad flag, duration or attributes); 1 runtime errors
(no such process, no permission, backend unavailable) and runs cut short because every
target process exited (what was gathered is still printed, with a note on stderr: a partial
answer must not look like a complete one to a script); 130 on Ctrl-C (also after printing
what was gathered). Every error is one line on stderr, never a traceback.

Defaults: 100 ms samples and 2 s aggregations (a short run should be dense), except where
the backend's registry entry says otherwise. The working-set
window and cold age default to the exporter's (60 s / 120 s) but never more than half the
run: a 10 s snapshot cannot see 60 s of idleness, and with both at half the run, cold =
"idle during the whole second half" and working set = the rest.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from typing import NoReturn, Sequence, TextIO

from exporter.engines.registry import BACKEND_NAMES, REGISTRY
from exporter.model.attrs import AttrsError, MonitoringAttrs
from exporter.model.durations import DurationError, format_duration, parse_duration
from exporter.model.engine import Engine, TargetSpec
from exporter.model.errors import AccessDenied, OpsError, ProcessGone
from exporter.model.process import COMM_LEN, ProcessRef
from exporter.procfs.io import PosixIO
from exporter.procfs.parsers import alive, process_image, read_stat
from exporter.procfs.scan import PF_KTHREAD, scan
from exporter.report import Frame, Recording, format_bytes, render_json, render_table
from exporter.summary.promotion import PromotionTracker
from exporter.summary import (
    DEFAULT_COLD_AGE,
    DEFAULT_WORKING_SET_WINDOW,
    Policy,
    summarize,
)

PROG = "damon-exporter"
DEFAULT_DURATION = "10s"
#: keep at most this many frames for the heatmap; beyond, every other one is dropped
MAX_FRAMES = 512


class UsageError(Exception):
    """Bad command line: exit 2."""


class RuntimeFailure(Exception):
    """The command line is fine but the machine says no: exit 1."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so that every error is
    one line in our format."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=f"{PROG} snapshot",
        description="Monitor processes for a while with DAMON's region sampling and print "
        "working set, cold memory and an access heatmap.",
    )
    who = p.add_argument_group("what to monitor (one of)")
    who.add_argument("--pid", type=str, action="append", default=[], metavar="PID", help="a process id (repeatable)")
    who.add_argument("--comm", metavar="NAME", help="every process whose comm (first 15 chars) is NAME")
    p.add_argument("--name", help="target name (default: the comm, or 'pids')")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES)
    p.add_argument("--duration", default=DEFAULT_DURATION, help="how long to monitor (default 10s; rounded down to whole aggregations)")
    p.add_argument("--sample-interval", metavar="D", help="default 100ms (5ms with damon_sysfs)")
    p.add_argument("--aggregation-interval", metavar="D", help="default 2s")
    p.add_argument("--update-interval", metavar="D", help="default 10s")
    p.add_argument("--min-regions", type=int, metavar="N", help="default 10")
    p.add_argument("--max-regions", type=int, metavar="N", help="default 100")
    p.add_argument("--cold-age", metavar="D", help="idle this long = cold (default 120s, at most half the duration)")
    p.add_argument("--working-set-window", metavar="D", help="accessed within this = working set (default 60s, at most half the duration)")
    p.add_argument("--format", default="table", choices=("table", "json", "prometheus"))
    return p


def _duration(flag: str, text: str) -> float:
    try:
        return parse_duration(text)
    except DurationError as e:
        raise UsageError(f"{flag}: {e}") from None


# -- processes -----------------------------------------------------------------------------


def process_ref(pid: int) -> ProcessRef:
    """The ref of a user process that exists now, or RuntimeFailure saying why not."""
    try:
        st = read_stat(PosixIO(), "/proc", pid, "")
    except ProcessGone:
        st = None
    if st is None or not alive(PosixIO(), "/proc", pid, st):
        raise RuntimeFailure(f"no process with pid {pid}")
    if st.flags & PF_KTHREAD:
        raise RuntimeFailure(f"pid {pid} is a kernel thread ({st.comm}): it has no user memory to monitor")
    return ProcessRef(pid, st.start_time, process_image(PosixIO(), "/proc", pid, st))


def find_comm(comm: str) -> tuple[list[ProcessRef], list[str]]:
    """User processes whose comm equals ``comm`` (compared on its first 15 chars), except
    this one; and their comms (to default the target name). Uses discovery's /proc scan,
    which already skips kernel threads and zombies."""
    want = comm[:COMM_LEN]
    me = os.getpid()
    refs = [
        ProcessRef(p.pid, p.start_time, p.image)
        for p in scan(want_exe=False, want_cmdline=False).values()
        if p.comm == want and p.pid != me
    ]
    return sorted(refs), [want]


# -- the run -------------------------------------------------------------------------------


class Progress:
    """A ``\\r`` status line on stderr, only when stderr is a terminal."""

    def __init__(self, stream: TextIO, total: float) -> None:
        self.stream = stream
        self.total = total
        self.enabled = stream.isatty()
        self._last = 0.0

    def update(self, elapsed: float, working_set: int | None) -> None:
        if not self.enabled or elapsed - self._last < 0.2:
            return
        self._last = elapsed
        ws = "-" if working_set is None else format_bytes(working_set)
        self.stream.write(f"\r{elapsed:5.1f}s / {self.total:.1f}s  working set {ws}\x1b[K")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def record(engine: Engine, spec: TargetSpec, run: Recording, progress: Progress) -> int:
    """Sample until ``requested_duration`` is covered by whole aggregations (at least one),
    all processes exited, or Ctrl-C. Returns the exit code the run itself calls for."""
    engine.set_attrs(run.attrs)
    engine.set_horizons((run.policy.working_set_window, run.policy.cold_age), returns_after=run.policy.cold_age)
    engine.set_targets([spec])
    wanted = max(1, int(run.requested_duration / run.attrs.aggregation_interval + 1e-9))
    start = time.monotonic()
    working_set = None
    code = 0
    promotions = PromotionTracker()  # the run's frames carry the same counters /metrics does
    try:
        while run.aggregations < wanted:
            agg = engine.step()
            run.samples += 1
            elapsed = time.monotonic() - start
            if agg is not None:
                summary = summarize(agg, run.policy, promotions)
                run.aggregations += 1
                run.frames.append(Frame(elapsed, summary))
                if len(run.frames) > MAX_FRAMES:
                    run.frames[:] = run.frames[1::2]
                t = summary.target(spec.name)
                working_set = t.working_set_bytes if t else None
            progress.update(elapsed, working_set)
            if engine.live_processes(spec.key) == 0:
                run.notes.append(
                    f"every target process exited after {elapsed:.1f}s of {run.requested_duration:g}s; "
                    "printed what was gathered until then"
                )
                code = 1
                break
    except KeyboardInterrupt:
        run.notes.append(f"interrupted after {time.monotonic() - start:.1f}s")
        code = 130
    finally:
        progress.done()
        run.elapsed = time.monotonic() - start
    return code


# -- main ----------------------------------------------------------------------------------


def _setup_logging() -> None:
    """Warnings of the core (a process we may not read) as ``damon-exporter: warning:`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.addLevelName(logging.WARNING, "warning")
    logging.addLevelName(logging.ERROR, "error")


#: A snapshot is short and interactive: sample faster than the exporter's long-running
#: defaults (its cost lasts only the run) and aggregate often enough for a heatmap.
SNAPSHOT_SAMPLE_INTERVAL = 0.1
SNAPSHOT_AGGREGATION_INTERVAL = 2.0
SNAPSHOT_UPDATE_INTERVAL = 10.0


def _attrs(args: argparse.Namespace, backend: str) -> MonitoringAttrs:
    base = MonitoringAttrs(
        sample_interval=SNAPSHOT_SAMPLE_INTERVAL,
        aggregation_interval=SNAPSHOT_AGGREGATION_INTERVAL,
        update_interval=SNAPSHOT_UPDATE_INTERVAL,
    )
    changes: dict[str, float | int] = {}
    for flag, field in (
        ("--sample-interval", "sample_interval"),
        ("--aggregation-interval", "aggregation_interval"),
        ("--update-interval", "update_interval"),
    ):
        text = getattr(args, field)
        if text is not None:
            changes[field] = _duration(flag, text)
    if "sample_interval" not in changes and backend in REGISTRY:
        sample = REGISTRY[backend].snapshot_sample_interval
        changes["sample_interval"] = min(sample, changes.get("aggregation_interval", base.aggregation_interval))
    for field in ("min_regions", "max_regions"):
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    try:
        return base.with_changes(**changes)
    except AttrsError as e:
        raise UsageError(str(e)) from None


def _targets(args: argparse.Namespace) -> tuple[list[ProcessRef], str]:
    if args.pid and args.comm is not None:
        raise UsageError("--pid and --comm are mutually exclusive")
    if not args.pid and args.comm is None:
        raise UsageError("say what to monitor: --pid PID (repeatable) or --comm NAME")
    if args.comm is not None:
        if not args.comm:
            raise UsageError("--comm: empty process name")
        refs, _ = find_comm(args.comm)
        if not refs:
            raise RuntimeFailure(f"no process with comm {args.comm[:COMM_LEN]!r}")
        return refs, args.name or args.comm[:COMM_LEN]
    pids = []
    for text in args.pid:
        if not text.isdigit() or int(text) <= 0:
            raise UsageError(f"--pid: not a process id: {text!r}")
        pids.append(int(text))
    refs = [process_ref(pid) for pid in sorted(set(pids))]
    return refs, args.name or "pids"


def _probe(engine: Engine, refs: Sequence[ProcessRef]) -> None:
    """Fail early and clearly on a process we may not read, rather than print an empty run."""
    for ref in refs:
        try:
            engine.probe(ref)
        except ProcessGone:
            raise RuntimeFailure(f"process {ref.pid} exited before monitoring started") from None
        except AccessDenied as e:
            raise RuntimeFailure(f"pid {ref.pid}: {e}") from None


def run_command(argv: list[str], stdout: TextIO, stderr: TextIO) -> int:
    args = build_parser().parse_args(argv)
    duration = _duration("--duration", args.duration)
    cold_age = _duration("--cold-age", args.cold_age) if args.cold_age else min(DEFAULT_COLD_AGE, duration / 2)
    ws_window = (
        _duration("--working-set-window", args.working_set_window)
        if args.working_set_window
        else min(DEFAULT_WORKING_SET_WINDOW, duration / 2)
    )
    # validate the attributes the user typed before touching the machine (exit 2 first)
    _attrs(args, "")
    refs, name = _targets(args)

    from exporter.engines.registry import create_engine

    try:
        engine = create_engine(args.backend)
    except (OpsError, ValueError) as e:
        raise RuntimeFailure(str(e)) from None
    try:
        attrs = _attrs(args, engine.name)
        if duration < attrs.aggregation_interval:
            raise UsageError(
                f"--duration ({format_duration(duration)}) is shorter than the aggregation interval "
                f"({format_duration(attrs.aggregation_interval)}): no aggregation would complete"
            )
        _probe(engine, refs)
        run = Recording(
            backend=engine.name,
            backend_reason=engine.selection_reason,
            attrs=attrs,
            policy=Policy(cold_age=cold_age, working_set_window=ws_window),
            requested_duration=duration,
        )
        code = record(engine, TargetSpec(name, tuple(refs)), run, Progress(stderr, duration))
    finally:
        engine.close()
    if run.last is None:
        raise RuntimeFailure("; ".join(run.notes) or "no aggregation completed")
    stdout.write(_render(args.format, run, stdout))
    stdout.flush()
    for note in run.notes:
        print(f"{PROG}: note: {note}", file=stderr)
    return code


def _render(fmt: str, run: Recording, stdout: TextIO) -> str:
    if fmt == "json":
        return render_json(run)
    if fmt == "prometheus":
        from exporter.metrics import render_text

        return render_text(run.last)  # type: ignore[arg-type]  # checked by the caller
    tty = stdout.isatty()
    width = shutil.get_terminal_size((80, 24)).columns if tty else 80
    colour = tty and not os.environ.get("NO_COLOR")
    return render_table(run, width=max(20, width - 9), colour=colour)


def main(argv: list[str]) -> int:
    try:
        _setup_logging()
        return run_command(argv, sys.stdout, sys.stderr)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeFailure as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:  # e.g. /proc unreadable: still one line, not a traceback
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
