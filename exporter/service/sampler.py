"""The sampler thread: runs the monitor for all targets and publishes its state.

One thread owns the :class:`Monitor`, the operations set and the discoverer; nothing else
touches them. Other threads talk to it only through :meth:`Sampler.apply_config` (a
reference it picks up at the next aggregation) and read it only through the published
:class:`ServiceState`. A failure never ends the thread: a missing backend is retried, an
unexpected exception restarts the monitor after a pause, each with one log line and a
``damon_sampler_errors_total{kind}`` increment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from typing import Any, Callable

from ..core.monitor import Monitor, TargetSpec
from ..core.snapshot import MonitorSnapshot
from ..ops.base import OpsError, Operations
from .budget import CpuBudget, TargetLoad
from .state import PendingTarget, StateBox

log = logging.getLogger("exporter.sampler")

#: seconds between attempts to open a backend that is unavailable (e.g. missing privilege)
BACKEND_RETRY = 30.0
#: pause before restarting the monitor after an unexpected exception
RESTART_PAUSE = 5.0


def _default_ops_factory(name: str) -> Operations:
    from ..ops.registry import create_ops

    return create_ops(name)


def _default_discoverer_factory(config: Any) -> Any:
    from ..discovery import Discoverer

    return Discoverer(config, self_pid=os.getpid())


class Sampler:
    """Owns the monitoring loop. ``start()``; ``apply_config(cfg)`` from any thread; the
    ``stop`` event ends it."""

    def __init__(
        self,
        config: Any,
        box: StateBox,
        stop: threading.Event,
        *,
        ops_factory: Callable[[str], Operations] = _default_ops_factory,
        discoverer_factory: Callable[[Any], Any] = _default_discoverer_factory,
        budget_window: float = 10.0,
    ) -> None:
        self.config = config
        self.box = box
        self.stop = stop
        self.ops_factory = ops_factory
        self.discoverer_factory = discoverer_factory
        self.budget = CpuBudget(config.cpu_budget or 0.0, config.monitoring, window=budget_window)
        self._pending_config: Any = None
        self._errors: Counter[str] = Counter()
        self._errors_base: Counter[str] = Counter()  # from monitors that were restarted
        self._checks_base = 0
        self._seen_warnings: set[str] = set()
        self._specs: list[TargetSpec] = []
        self._monitor: Monitor | None = None
        self._ops: Operations | None = None
        self._discoverer: Any = None
        self._last_backend_error = ""
        self.thread = threading.Thread(target=self._main, name="damon-sampler", daemon=True)

    # -- API for other threads -------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def apply_config(self, config: Any) -> None:
        """Hand over a validated config; the sampler applies it at its next aggregation."""
        self._pending_config = config

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------

    def _count(self, kind: str, n: int = 1) -> None:
        self._errors[kind] += n

    def _main(self) -> None:
        while not self.stop.is_set():
            try:
                self._take_pending_config()
                if self._ops is None:
                    self._ops = self._open_backend()
                    if self._ops is None:
                        self.stop.wait(BACKEND_RETRY)
                        continue
                self._run_monitor(self._ops)
            except Exception as e:  # never die: one line, a counter, a pause, a fresh monitor
                self._count("internal")
                log.error("sampler failed, restarting in %gs", RESTART_PAUSE, exc_info=log.isEnabledFor(logging.DEBUG), extra={"kv": {"err": f"{type(e).__name__}: {e}"}})
                self._retire_monitor()
                self._publish_errors()  # before the first aggregation nothing else would
                self.stop.wait(RESTART_PAUSE)
        self._retire_monitor()
        if self._ops is not None:
            try:
                self._ops.close()
            except Exception:  # closing is best effort at exit
                pass

    def _open_backend(self) -> Operations | None:
        name = self.config.backend
        try:
            ops = self.ops_factory(name)
        except OpsError as e:
            self._count(e.kind)
            # one error line per distinct problem; the retries repeat it at debug level only
            level = logging.DEBUG if str(e) == self._last_backend_error else logging.ERROR
            self._last_backend_error = str(e)
            log.log(level, "cannot open access-check backend %s; retrying every %gs", name, BACKEND_RETRY, extra={"kv": {"err": str(e)}})
            self._publish_errors()
            return None
        log.info("access-check backend opened", extra={"kv": {"backend": ops.name, "requested": name}})
        for w in ops.interference():
            log.warning("results may be disturbed", extra={"kv": {"reason": w}})
        self.box.update(backend=ops.name)
        return ops

    def _retire_monitor(self) -> None:
        m = self._monitor
        if m is None:
            return
        st = m.stats()
        self._checks_base += st.checks_total
        self._errors_base.update(dict(st.errors_total))
        self._monitor = None

    def _run_monitor(self, ops: Operations) -> None:
        cfg = self.config
        if self._discoverer is None:
            self._discoverer = self.discoverer_factory(cfg)
            self.box.update(label_names=tuple(self._discoverer.label_names()))
        m = Monitor(ops, self.budget.effective_attrs(), cold_age=cfg.cold_age, working_set_window=cfg.working_set_window)
        self._monitor = m
        self.box.update(sample_interval=m.attrs.sample_interval, aggregation_interval=m.attrs.aggregation_interval, cpu_budget=cfg.cpu_budget or 0.0)
        m.run(self.stop, self._on_snapshot, self._discover)

    # -- discovery -----------------------------------------------------------------------

    def _discover(self) -> list[TargetSpec]:
        """Called by the monitor every update interval (and by us on reload)."""
        try:
            specs = list(self._discoverer.discover())
        except Exception as e:
            self._count("discovery")
            log.error("target discovery failed; keeping the previous targets", extra={"kv": {"err": f"{type(e).__name__}: {e}"}})
            return self._specs
        for w in getattr(self._discoverer, "warnings", ()) or ():
            if w not in self._seen_warnings:
                self._seen_warnings.add(w)
                self._count("discovery")
                log.warning(w)
        self._specs = specs
        self._publish_pending()
        self._reapply_caps()
        return specs

    def _reapply_caps(self) -> None:
        m = self._monitor
        if m is None:
            return
        names = {s.name for s in self._specs}
        self.budget.forget(names)
        for name, cap in self.budget.caps.items():
            if m.max_regions_of(name) != cap:
                m.set_target_max_regions(name, cap)

    def _publish_pending(self) -> None:
        self.box.update(pending=self._pending(self.box.get().snapshot))

    def _pending(self, snap: MonitorSnapshot | None) -> tuple[PendingTarget, ...]:
        """Discovered targets with no aggregation yet. Keyed by name *and* labels: the groups
        of a ``group_by`` target share one name."""
        done = {(t.name, t.labels) for t in snap.targets} if snap is not None else set()
        return tuple(PendingTarget(s.name, len(s.processes), s.labels) for s in self._specs if (s.name, s.labels) not in done)

    # -- reload --------------------------------------------------------------------------

    def _take_pending_config(self) -> bool:
        cfg, self._pending_config = self._pending_config, None
        if cfg is None:
            return False
        if self._ops is not None and cfg.backend != self.config.backend:
            log.warning("backend change needs a restart; keeping the running backend", extra={"kv": {"running": self.config.backend, "configured": cfg.backend}})
        self.config = cfg
        self.budget.reset(cfg.cpu_budget or 0.0, cfg.monitoring)
        self._discoverer = None if self._monitor is None else self.discoverer_factory(cfg)
        m = self._monitor
        if m is not None:
            self.box.update(label_names=tuple(self._discoverer.label_names()), cpu_budget=cfg.cpu_budget or 0.0)
            m.cold_age = cfg.cold_age
            m.working_set_window = cfg.working_set_window
            m.set_attrs(self.budget.effective_attrs())
            m.set_targets(self._discover())
        return True

    # -- each aggregation ----------------------------------------------------------------

    def _on_snapshot(self, snap: MonitorSnapshot) -> None:
        m = self._monitor
        assert m is not None and self._ops is not None
        cpu = time.thread_time()
        loads = [TargetLoad(t.name, t.nr_regions, t.max_regions) for t in snap.targets]
        d = self.budget.observe(time.monotonic(), cpu, loads, self._ops.adaptive)
        for name, cap in d.max_regions.items():
            m.set_target_max_regions(name, cap)
        if d.attrs is not None:
            m.set_attrs(d.attrs)
        if d.message:
            log.info(d.message, extra={"kv": {"budget_ratio": f"{d.ratio:.3f}" if d.ratio is not None else ""}})
        pending = self._pending(snap)
        errors = Counter(self._errors_base)
        errors.update(dict(snap.stats.errors_total))
        errors.update(self._errors)
        self.box.update(
            snapshot=snap,
            pending=pending,
            cpu_seconds_total=cpu,
            budget_ratio=self.budget.last_ratio,
            sample_interval=snap.sample_interval,
            aggregation_interval=snap.aggregation_interval,
            checks_total=self._checks_base + snap.stats.checks_total,
            errors_total=tuple(sorted(errors.items())),
            ready=True,
        )
        self._take_pending_config()

    def _publish_errors(self) -> None:
        errors = Counter(self._errors_base)
        errors.update(self._errors)
        self.box.update(errors_total=tuple(sorted(errors.items())))
