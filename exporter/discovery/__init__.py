"""Target discovery: which processes each configured target means right now.

``Discoverer(config).discover()`` scans /proc and the cgroup trees and returns one
``TargetSpec`` per target (or per group for ``group_by`` targets), every spec carrying the
same label names (``label_names()``) so metric families stay consistent.
"""

from exporter.discovery.cgroups import ProcCgroups, parse_proc_cgroup
from exporter.discovery.discoverer import Discoverer, matches
from exporter.discovery.kube import KubeMeta, kube_metadata

__all__ = ["Discoverer", "KubeMeta", "ProcCgroups", "kube_metadata", "matches", "parse_proc_cgroup"]
