"""The sampler thread: owns the schedule, drives the engine, publishes summaries.

One thread owns the engine and the discoverer; nothing else touches them. Data flows one
way: the sampler discovers targets, hands them to the engine between steps (with region
caps and new attributes: the kernel's ``damon_call()`` model), steps it, turns each
aggregation's raw records into a :class:`~exporter.summary.Summary` and publishes it. The
engine never calls back. Other threads talk to the sampler only through
:meth:`Sampler.apply_config` (a reference it picks up at the next aggregation) and read it
only through the published :class:`ServiceState`. A failure never ends the thread: a
missing backend is retried, an unexpected exception restarts the engine after a pause,
each with one log line and a ``damon_sampler_errors_total{kind}`` increment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import replace
from typing import Any, Callable, Mapping

from exporter.model.engine import Engine, TargetSpec
from exporter.model.errors import OpsError
from exporter.model.records import Aggregation
from exporter.service.budget import CpuBudget, TargetLoad
from exporter.service.state import PendingTarget, StateBox
from exporter.summary import Policy, Summary, summarize
from exporter.summary.promotion import PromotionTracker
from exporter.model.attrs import PAGE_SIZE

log = logging.getLogger("exporter.sampler")

def own_rss() -> int:
    """The exporter's resident memory (bytes), from /proc/self/statm."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0

#: seconds between attempts to open a backend that is unavailable (e.g. missing privilege)
BACKEND_RETRY = 30.0
#: pause before restarting the engine after an unexpected exception
RESTART_PAUSE = 5.0


def _default_engine_factory(name: str, skip: Mapping[str, str]) -> Engine:
    from exporter.engines.registry import create_engine

    return create_engine(name, skip=skip)


def _default_discoverer_factory(config: Any) -> Any:
    from exporter.discovery import Discoverer

    return Discoverer(config, self_pid=os.getpid())


class Sampler:
    """Owns the schedule. ``start()``; ``apply_config(cfg)`` from any thread; the ``stop``
    event ends it."""

    def __init__(
        self,
        config: Any,
        box: StateBox,
        stop: threading.Event,
        *,
        engine_factory: Callable[[str, Mapping[str, str]], Engine] = _default_engine_factory,
        discoverer_factory: Callable[[Any], Any] = _default_discoverer_factory,
        budget_window: float = 10.0,
    ) -> None:
        self.config = config
        self.box = box
        self.stop = stop
        self.engine_factory = engine_factory
        self.discoverer_factory = discoverer_factory
        self.budget = CpuBudget(config.cpu_budget or 0.0, config.monitoring, window=budget_window,
                                resolution=self._resolution(config))
        self._pending_config: Any = None
        self._errors: Counter[str] = Counter()
        self._errors_base: Counter[str] = Counter()  # from engines that were restarted
        #: returns from idleness per target: counters that outlive engine restarts and
        #: fallbacks (history is by address and time, whatever engine saw it)
        self._promotions = PromotionTracker()
        #: memory_limit: over it (with 10% hysteresis), discovery's new processes are left out;
        #: the processes each target was last handed, and how many were left out per target
        self._memory_limited = False
        self._handed: dict[Any, frozenset] = {}
        self._left_out: dict[Any, int] = {}
        self._checks_base = 0
        self._kernel_cpu_base = 0.0  # from engines that were restarted
        self._seen_warnings: set[str] = set()
        self._specs: list[TargetSpec] = []
        self._engine: Engine | None = None
        self._next_discovery = 0.0
        self._discoverer: Any = None
        self._last_backend_error = ""
        #: under ``auto``: backends whose engine failed before its first aggregation, and why
        self._failed_backends: dict[str, str] = {}
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
                if self._engine is None:
                    self._engine = self._open_backend()
                    if self._engine is None:
                        self.stop.wait(BACKEND_RETRY)
                        continue
                self._run(self._engine)
            except Exception as e:  # never die: one line, a counter, a pause, a fresh engine
                if self._fall_back(e):
                    continue
                self._count(e.kind if isinstance(e, OpsError) else "internal")
                log.error("sampler failed, restarting in %gs", RESTART_PAUSE, exc_info=log.isEnabledFor(logging.DEBUG), extra={"kv": {"err": f"{type(e).__name__}: {e}"}})
                self._retire_engine()
                self._publish_errors()  # before the first aggregation nothing else would
                self.stop.wait(RESTART_PAUSE)
        self._retire_engine()
        self._close_discoverer()

    def _close_discoverer(self) -> None:
        """Stop the threads of a discoverer that is replaced or done (pod metadata)."""
        close = getattr(self._discoverer, "close", None)
        if close is not None:
            close()

    def _open_backend(self) -> Engine | None:
        name = self.config.backend
        try:
            engine = self.engine_factory(name, self._failed_backends)
        except OpsError as e:
            self._count(e.kind)
            # one error line per distinct problem; the retries repeat it at debug level only
            level = logging.DEBUG if str(e) == self._last_backend_error else logging.ERROR
            self._last_backend_error = str(e)
            log.log(level, "cannot open access-check backend %s; retrying every %gs", name, BACKEND_RETRY, extra={"kv": {"err": str(e)}})
            self._publish_errors()
            return None
        log.info("access-check backend opened", extra={"kv": {"backend": engine.name, "requested": name}})
        for w in engine.interference():
            log.warning("results may be disturbed", extra={"kv": {"reason": w}})
        self.box.update(backend=engine.name, backend_reason=engine.selection_reason,
                        backend_passed_over=tuple(getattr(engine, "passed_over", ())))
        self.budget.reset(self.config.cpu_budget or 0.0, self._monitoring(self.config, engine), self._resolution(self.config),
                          per_aggregation=engine.samples_in_kernel)
        return engine

    def _fall_back(self, e: Exception) -> bool:
        """Under ``auto``, an engine that fails before its first aggregation is passed over
        for the next backend at once (the kernel may refuse only what is written to it, a
        privilege may be missing only for real processes). A failure after that is an
        ordinary restart of the same backend."""
        engine = self._engine
        if (self.config.backend != "auto" or engine is None or self.box.get().ready
                or engine.name in self._failed_backends):  # passed over once already: restart
            return False
        why = f"{type(e).__name__}: {e}" if not isinstance(e, OpsError) else str(e)
        self._failed_backends[engine.name] = why
        self._count(e.kind if isinstance(e, OpsError) else "internal")
        log.error("access-check backend failed before its first aggregation; falling back", extra={"kv": {"backend": engine.name, "err": why}})
        self._retire_engine()
        self._publish_errors()
        return True

    def _retire_engine(self) -> None:
        """Keep the counters of an engine that stops (restart or exit), then close it."""
        e, self._engine = self._engine, None
        if e is None:
            return
        st = e.stats()
        self._checks_base += st.checks_total
        self._kernel_cpu_base += e.kernel_cpu_seconds()
        self._errors_base.update(dict(st.errors_total))
        try:
            e.close()
        except Exception:  # closing is best effort
            pass

    def _run(self, engine: Engine) -> None:
        """The schedule: discover when due, step, summarize and publish each aggregation."""
        cfg = self.config
        if self._discoverer is None:
            self._discoverer = self.discoverer_factory(cfg)
            self.box.update(label_names=tuple(self._discoverer.label_names()))
        engine.sleep = self.stop.wait  # wake at once on stop
        engine.set_attrs(self.budget.effective_attrs())
        engine.set_horizons(self.horizons(), returns_after=self.config.cold_age)
        self._next_discovery = 0.0
        self.box.update(sample_interval=engine.attrs.sample_interval, aggregation_interval=engine.attrs.aggregation_interval, cpu_budget=cfg.cpu_budget or 0.0,
                        shortest_counted_return=engine.shortest_counted_return(engine.attrs.aggregation_interval),
                        configured_sample_interval=self.budget.base.sample_interval,
                        configured_aggregation_interval=self.budget.base.aggregation_interval,
                        cold_age=cfg.cold_age, working_set_window=cfg.working_set_window, histograms=cfg.histograms)
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= self._next_discovery:
                self._retarget(engine)
                self._next_discovery = now + engine.attrs.update_interval
            agg = engine.step()
            if agg is not None:
                self._on_aggregation(engine, agg)

    # -- discovery -----------------------------------------------------------------------

    def _discover(self) -> list[TargetSpec]:
        """Every update interval, and on reload; the previous targets when discovery fails."""
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
        self.box.update(kube=getattr(self._discoverer, "kube_names", lambda: None)())
        self._publish_pending()
        return specs

    def _retarget(self, e: Engine) -> None:
        """Hand the discovered targets to the engine, with the budget's caps for them."""
        e.set_targets(self._bounded(self._discover()))
        self.budget.forget({s.key for s in self._specs})
        for key, cap in self.budget.caps.items():
            if e.region_cap(key) != cap:
                e.set_region_cap(key, cap)

    def _bounded(self, specs: list[TargetSpec]) -> list[TargetSpec]:
        """The specs as the memory limit allows: while the exporter is over memory_limit,
        each target keeps only processes it was already handed (what is monitored stays
        monitored; nothing new is taken on)."""
        if not self._memory_limited:
            self._handed = {s.key: frozenset(s.processes) for s in specs}
            self._left_out = {}
            return specs
        out, left = [], {}
        for s in specs:
            had = self._handed.get(s.key, frozenset())
            kept = tuple(p for p in s.processes if p in had)
            if len(kept) < len(s.processes):
                left[s.key] = len(s.processes) - len(kept)
            out.append(replace(s, processes=kept))
        self._left_out = left
        return out

    def _check_memory(self) -> None:
        """Compare the exporter's resident memory with memory_limit; one log line and one
        ``limit`` error each time the limit starts holding new processes back."""
        limit = self.config.memory_limit
        rss = own_rss()
        if limit and not self._memory_limited and rss > limit:
            self._memory_limited = True
            self._count("limit")
            log.warning("memory_limit reached: no new process is monitored until the exporter is back under it "
                        "(damon_target_unmonitored_processes{kind=\"limit\"} counts those left out)",
                        extra={"kv": {"rss_bytes": rss, "memory_limit": limit}})
        elif self._memory_limited and (not limit or rss < 0.9 * limit):
            self._memory_limited = False
            log.info("back under memory_limit: new processes are monitored again", extra={"kv": {"rss_bytes": rss, "memory_limit": limit}})

    def _with_left_out(self, summary: Summary) -> Summary:
        """The processes the memory limit left out, in each target's not-monitored counts."""
        if not self._left_out:
            return summary
        targets = []
        for t in summary.targets:
            n = self._left_out.get((t.name, t.labels), 0)
            if n:
                kinds = Counter(dict(t.not_monitored))
                kinds["limit"] += n
                t = replace(t, not_monitored=tuple(sorted(kinds.items())))
            targets.append(t)
        return replace(summary, targets=tuple(targets))

    def _publish_pending(self) -> None:
        """The targets just discovered: those without an aggregation yet as pending, and the
        last summary without the targets discovery no longer lists (a group that max_groups
        or an exit dropped would otherwise show until the next aggregation, next to the
        group that replaced it: more series than max_groups)."""
        summary = self.box.get().summary
        if summary is not None:
            listed = {s.key for s in self._specs}
            kept = tuple(t for t in summary.targets if (t.name, t.labels) in listed)
            if len(kept) != len(summary.targets):
                summary = replace(summary, targets=kept)
        self.box.update(summary=summary, pending=self._pending(summary))

    def _pending(self, summary: Summary | None) -> tuple[PendingTarget, ...]:
        """Discovered targets with no aggregation yet. Keyed by name *and* labels: the groups
        of a ``group_by`` target share one name."""
        done = {(t.name, t.labels) for t in summary.targets} if summary is not None else set()
        return tuple(PendingTarget(s.name, len(s.processes), s.labels) for s in self._specs if s.key not in done)

    # -- reload --------------------------------------------------------------------------

    def _take_pending_config(self) -> bool:
        cfg, self._pending_config = self._pending_config, None
        if cfg is None:
            return False
        if self._engine is not None and cfg.backend != self.config.backend:
            log.warning("backend change needs a restart; keeping the running backend", extra={"kv": {"running": self.config.backend, "configured": cfg.backend}})
        self.config = cfg
        self.budget.reset(cfg.cpu_budget or 0.0, self._monitoring(cfg, self._engine), self._resolution(cfg))
        e = self._engine
        self._close_discoverer()
        self._discoverer = None if e is None else self.discoverer_factory(cfg)
        if e is not None:
            self.box.update(label_names=tuple(self._discoverer.label_names()), cpu_budget=cfg.cpu_budget or 0.0,
                            cold_age=cfg.cold_age, working_set_window=cfg.working_set_window, histograms=cfg.histograms)
            e.set_attrs(self.budget.effective_attrs())
            e.set_horizons(self.horizons(), returns_after=self.config.cold_age)
            self._retarget(e)
        return True

    @staticmethod
    def _monitoring(cfg: Any, engine: Engine | None) -> Any:
        """The configured attributes, with the backend's defaults for keys the file leaves
        unset (kernel DAMON samples every 5 ms where user space samples every 500 ms)."""
        if engine is None:
            return cfg.monitoring
        from exporter.engines.registry import monitoring_attrs

        return monitoring_attrs(engine.name, cfg.monitoring, getattr(cfg, "monitoring_keys", ()))

    @staticmethod
    def _resolution(config: Any) -> float:
        """The shortest time the metrics answer for: the budget keeps it resolved."""
        return min(config.working_set_window, config.cold_age)

    def policy(self) -> Policy:
        return Policy(cold_age=self.config.cold_age, working_set_window=self.config.working_set_window)

    def horizons(self) -> tuple[float, float]:
        """When the summary will look (an engine measuring bytes touched since a moment
        needs to know; the others ignore it)."""
        return (self.config.working_set_window, self.config.cold_age)

    # -- each aggregation ----------------------------------------------------------------

    def _on_aggregation(self, engine: Engine, agg: Aggregation) -> None:
        summary = self._with_left_out(summarize(agg, self.policy(), self._promotions))
        self._check_memory()
        cpu = time.thread_time()
        kernel_cpu = self._kernel_cpu_base + engine.kernel_cpu_seconds()
        loads = [TargetLoad(t.key, len(t.regions), t.max_regions, t.nr_merged) for t in agg.targets]
        # the kernel's work for the engine is the exporter's cost: the budget counts both
        d = self.budget.observe(time.monotonic(), cpu + kernel_cpu, loads, engine.uses_region_cap)
        for key, cap in d.max_regions.items():
            engine.set_region_cap(key, cap)
        if d.attrs is not None:
            engine.set_attrs(d.attrs)
        if d.message:
            log.info(d.message, extra={"kv": {"budget_ratio": f"{d.ratio:.3f}" if d.ratio is not None else ""}})
        pending = self._pending(summary)
        errors = Counter(self._errors_base)
        errors.update(dict(agg.stats.errors_total))
        errors.update(self._errors)
        self.box.update(
            summary=summary,
            pending=pending,
            cpu_seconds_total=cpu,
            kernel_cpu_seconds_total=kernel_cpu,
            budget_ratio=self.budget.last_ratio,
            sample_interval=agg.sample_interval,
            aggregation_interval=agg.aggregation_interval,
            shortest_counted_return=engine.shortest_counted_return(agg.aggregation_interval),
            configured_sample_interval=self.budget.base.sample_interval,
            configured_aggregation_interval=self.budget.base.aggregation_interval,
            checks_total=self._checks_base + agg.stats.checks_total,
            errors_total=tuple(sorted(errors.items())),
            memory_limit=self.config.memory_limit,
            memory_limited=self._memory_limited,
            ready=True,
        )
        self._take_pending_config()

    def _publish_errors(self) -> None:
        errors = Counter(self._errors_base)
        errors.update(self._errors)
        self.box.update(errors_total=tuple(sorted(errors.items())))
