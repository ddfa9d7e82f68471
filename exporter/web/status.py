"""What the web layer says about itself on /metrics: the requests and connections it refused
or cut, and whether its config (TLS, users) last loaded.

The web layer owns these figures and publishes them itself, as a collector in the one
registry (client_python's way for a component's own metrics), instead of writing them into
the sampler's state: data flows one way, from the sampler to the HTTP server, never back.

Each figure has one writer: the refusal counts are written by the event loop only, the
reload status by the web config's loader only; a scrape reads them without a lock (an int
or a bool read is atomic under CPython, and the counters only grow).
"""

from __future__ import annotations

import time
from typing import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.metrics.catalog import WEB_REJECT_REASONS, family


class WebStatus(Collector):
    """The web layer's own counters and gauges, and their families for each scrape."""

    def __init__(self) -> None:
        self.rejected: dict[str, int] = dict.fromkeys(WEB_REJECT_REASONS, 0)
        self.reload_successful = True
        self.reload_success_timestamp = 0.0

    def reject(self, reason: str) -> None:
        """One refused or cut connection or request (event loop only)."""
        self.rejected[reason] += 1

    def reloaded(self, ok: bool) -> None:
        """The web config loaded (``ok``) or failed to, keeping the previous one."""
        if ok:
            self.reload_success_timestamp = time.time()
        self.reload_successful = ok

    def collect(self) -> Iterator[Metric]:
        ok = family("damon_web_config_last_reload_successful")
        ok.add_metric([], 1 if self.reload_successful else 0)
        ts = family("damon_web_config_last_reload_success_timestamp_seconds")
        ts.add_metric([], self.reload_success_timestamp)
        rejected = family("damon_web_rejected_total")
        for reason, n in list(self.rejected.items()):
            rejected.add_metric([reason], n)
        return iter([ok, ts, rejected])
