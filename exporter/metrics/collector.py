"""From the published state to exposition bytes: one registry, client_python's way.

One :class:`~prometheus_client.registry.CollectorRegistry` holds one collector of the
published state and, unless ``--web.disable-exporter-metrics``, client_python's own
``process_*`` collector; the encoder the client asked for (text or OpenMetrics) renders the
registry whole. :class:`StateCollector` reads the :class:`StateBox` once per scrape and never
takes a lock: the state is immutable, so the families built from it are reused until the
sampler publishes a new state (about once per aggregation), and a concurrent miss builds
them twice, harmlessly.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.metrics.self_metrics import self_families
from exporter.metrics.targets import target_families
from exporter.service.state import ServiceState, StateBox


def state_families(state: ServiceState) -> list[Metric]:
    """Every ``damon_*`` family of one state (pure)."""
    pending = ((p.name, p.nr_processes, p.labels) for p in state.pending)
    names = state.kube.labels if state.kube is not None else None
    return [*target_families(state.summary, state.label_names, pending, histograms=state.histograms, extra_labels=names),
            *self_families(state)]


class StateCollector(Collector):
    """The families of whatever state is published now; rebuilt only for a new state."""

    def __init__(self, box: StateBox) -> None:
        self.box = box
        self._cache: tuple[ServiceState, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        state = self.box.get()
        cached = self._cache
        if cached is None or cached[0] is not state:
            cached = self._cache = (state, state_families(state))
        return iter(cached[1])


class Exposition:
    """The exporter's one registry and how to render it."""

    def __init__(self, box: StateBox, exporter_metrics: bool = True, others: Sequence[Collector] = ()) -> None:
        """``others``: collectors of layers above this one that publish their own figures
        (the web server's, see exporter.web.status), after the sampler's."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.state = StateCollector(box)
        self.registry.register(self.state)
        for c in others:
            self.registry.register(c)
        if exporter_metrics:  # ``process_*`` of the exporter itself
            ProcessCollector(registry=self.registry)

    def render(self, encoder: Callable[[Any], bytes], content_type: str) -> bytes:
        """The whole exposition in the format of ``encoder`` (``content_type`` names it)."""
        return encoder(self.registry)
