"""What every engine remembers about processes it could not watch, written once.

An engine meets three kinds of trouble with a process: it exits (quietly dropped: not an
error), it cannot be read (permission, I/O, a bound), or the engine's own machinery fails.
The first is forgotten at once. The others are remembered per process, so the engine does
not retry a process that refused it at every discovery (one warning, not one per minute),
and per target, so the landing page and ``damon_target_up`` can say why. Counts by kind
feed ``damon_sampler_errors_total``. A failure is forgotten when the process is no longer
listed by any target (a reused pid is a new :class:`~exporter.model.process.ProcessRef`).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Iterable

from exporter.model.engine import TargetSpec
from exporter.model.errors import ImageChanged, OpsError, ProcessGone
from exporter.model.process import ProcessRef
from exporter.model.records import TargetKey

log = logging.getLogger("exporter.engines")

#: error messages a target's records carry (the landing page shows them; the rest are counted)
MAX_ERRORS_PER_TARGET = 5


class Failures:
    """Failed processes, the targets they failed for, and error counts by kind."""

    def __init__(self) -> None:
        self._failed: dict[ProcessRef, tuple[str, str]] = {}  # ref -> (message, kind)
        self._by_target: dict[TargetKey, dict[ProcessRef, str]] = {}
        self._counts: Counter[str] = Counter()

    def count(self, kind: str, n: int = 1) -> None:
        """An error that is nobody's process in particular (the kernel tree, a reset)."""
        self._counts[kind] += n

    def has_failed(self, ref: ProcessRef) -> bool:
        return ref in self._failed

    def fail(self, keys: Iterable[TargetKey], ref: ProcessRef, e: OpsError) -> None:
        """``ref`` cannot be watched for the targets ``keys``: quietly if it is gone, else
        counted, remembered (not retried while listed) and logged once."""
        if isinstance(e, ImageChanged):
            self._counts[e.kind] += 1
            log.info("target %s: %s; dropped, it is matched again at the next discovery", ",".join(k[0] for k in keys), e)
            return
        if isinstance(e, ProcessGone):
            return
        msg = self.note(keys, ref, e)
        self._failed[ref] = (msg, e.kind)
        log.warning("target %s: %s", ",".join(k[0] for k in keys), msg)

    def note(self, keys: Iterable[TargetKey], ref: ProcessRef, e: OpsError) -> str:
        """A counted error of ``ref`` that the engine retries (one aggregation's read failed)."""
        self._counts[e.kind] += 1
        msg = f"pid {ref.pid}: {e}"
        for k in keys:
            self._by_target.setdefault(k, {})[ref] = msg
        return msg

    def set_targets(self, specs: Iterable[TargetSpec]) -> None:
        """Keep only what concerns processes the targets still list."""
        by_target: dict[TargetKey, dict[ProcessRef, str]] = {}
        listed: set[ProcessRef] = set()
        for s in specs:
            refs = set(s.processes)
            listed |= refs
            kept = {r: m for r, m in self._by_target.get(s.key, {}).items() if r in refs}
            if kept:
                by_target[s.key] = kept
        self._by_target = by_target
        self._failed = {r: m for r, m in self._failed.items() if r in listed}

    def not_monitored(self, spec: TargetSpec) -> tuple[tuple[str, int], ...]:
        """How many of the target's processes are not monitored, by error kind (a process
        the exporter may not read is not a target without processes)."""
        counts: Counter[str] = Counter(self._failed[r][1] for r in spec.processes if r in self._failed)
        return tuple(sorted(counts.items()))

    def errors(self, key: TargetKey) -> tuple[str, ...]:
        """The target's error messages, at most :data:`MAX_ERRORS_PER_TARGET`."""
        return tuple(list(self._by_target.get(key, {}).values())[:MAX_ERRORS_PER_TARGET])

    def totals(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self._counts.items()))
