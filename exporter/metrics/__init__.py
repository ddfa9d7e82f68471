"""Prometheus metric families of the exporter.

:mod:`.targets` builds the per-target families from one summary (pure);
:mod:`.self_metrics` the exporter's own; :mod:`.collector` glues them to a registry.
"""

from __future__ import annotations

from typing import Sequence

from prometheus_client.exposition import generate_latest

from exporter.metrics.targets import target_families
from exporter.summary import Summary


class _Families:
    """The minimal "registry" ``generate_latest`` needs: an object with ``collect()``."""

    def __init__(self, families: list) -> None:
        self._families = families

    def collect(self):  # noqa: D401 - prometheus_client protocol
        return iter(self._families)


def render_text(summary: Summary, label_names: Sequence[str] = ()) -> str:
    """The target families of ``summary`` in the classic Prometheus text format."""
    return generate_latest(_Families(target_families(summary, label_names))).decode("utf-8")  # type: ignore[arg-type]


__all__ = ["render_text", "target_families"]
