"""The immutable state the sampler publishes, and the one-reference box that holds it.

client_python's pattern for expensive collectors: the producer builds a complete, frozen
object and swaps one reference (an atomic store under CPython); each scrape reads the
reference once and builds fresh metric families from it. No lock is ever held across I/O
and a scrape never waits for a sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from exporter.summary import Summary

@dataclass(frozen=True)
class PendingTarget:
    """A target that is configured but not yet in any aggregation (startup, new on reload)."""

    name: str
    nr_processes: int
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ServiceState:
    """Everything one scrape shows, as of one moment."""

    version: str
    backend: str  # chosen backend name, or the requested one while it is unavailable
    backend_reason: str = ""
    backend_passed_over: tuple[tuple[str, str], ...] = ()  # (backend, why in one word)  # why that backend (``auto``'s choice, or "requested")
    label_names: tuple[str, ...] = ()
    summary: Summary | None = None  # the last aggregation's
    #: targets known to discovery but absent from ``summary`` (shown with up=0)
    pending: tuple[PendingTarget, ...] = ()
    cpu_seconds_total: float = 0.0
    #: CPU of kernel threads working for the engine (kernel DAMON's kdamond), seconds
    kernel_cpu_seconds_total: float = 0.0
    budget_ratio: float = 0.0
    cpu_budget: float = 0.0
    #: what "cold" and "working set" mean now (config cold_age, working_set_window), seconds
    histograms: bool = True  # config ``histograms``: the per-target histograms exported
    cold_age: float = 0.0
    working_set_window: float = 0.0
    sample_interval: float = 0.0
    aggregation_interval: float = 0.0
    #: the intervals the config asks for; the two above are what the CPU budget left of them
    configured_sample_interval: float = 0.0
    configured_aggregation_interval: float = 0.0
    #: the shortest return of cold memory the promotion counter counts by its bytes at the
    #: intervals in effect (Engine.shortest_counted_return), seconds; None before an engine runs
    shortest_counted_return: float | None = None
    checks_total: int = 0
    errors_total: tuple[tuple[str, int], ...] = ()
    reload_successful: bool = True
    reload_success_timestamp: float = 0.0
    ready: bool = False
    #: no --config.file: the embedded default config (exporter.config.default) is in use
    default_config: bool = False
    #: the configured memory_limit (bytes, 0: none), and whether it holds new processes back
    memory_limit: int = 0
    memory_limited: bool = False
    #: pod names and the metadata source's health (exporter.discovery.kube_source.KubeNames),
    #: None when no pod metadata is fetched
    kube: Any = None

    def with_changes(self, **changes: object) -> "ServiceState":
        return replace(self, **changes)


@dataclass
class StateBox:
    """Holds the current :class:`ServiceState`. :meth:`get` is one attribute read. Writers
    (the sampler, the reloader) go through :meth:`update`, which takes a short lock around
    building the new object and storing it, never around I/O."""

    state: ServiceState
    _lock: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import threading

        self._lock = threading.Lock()

    def get(self) -> ServiceState:
        return self.state

    def update(self, **changes: object) -> ServiceState:
        """Replace some fields; readers see the old or the new object, never a mix."""
        with self._lock:  # type: ignore[attr-defined]
            self.state = self.state.with_changes(**changes)
            return self.state
