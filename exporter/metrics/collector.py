"""The prometheus_client collector of the running exporter.

It holds only the :class:`StateBox`; each ``collect()`` reads the current state once and
builds fresh families from it, so concurrent scrapes share nothing mutable.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client import ProcessCollector

from ..service.state import StateBox
from .self_metrics import self_families
from .targets import target_families


class DamonCollector(Collector):
    def __init__(self, box: StateBox) -> None:
        self.box = box

    def collect(self) -> Iterator[Metric]:
        state = self.box.get()  # one read: the whole scrape sees one consistent state
        pending = ((p.name, p.nr_processes, p.labels) for p in state.pending)
        yield from target_families(state.snapshot, state.label_names, pending)
        yield from self_families(state)


def make_registry(box: StateBox) -> CollectorRegistry:
    """Our families plus the standard ``process_*`` ones (RSS, CPU, fds of the exporter)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DamonCollector(box))
    ProcessCollector(registry=registry)
    return registry
