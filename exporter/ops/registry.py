"""Backend selection by name: ``auto``, ``page_idle`` or ``clear_refs``.

``auto`` prefers page_idle (page-granular, does not disturb reclaim) and falls back to
clear_refs (per mapping, works on stock distribution kernels and without root). The reason
for the choice is logged once at INFO and kept on the returned object as
``selection_reason`` so that ``/metrics`` and the CLI can show it.
"""

from __future__ import annotations

import logging

from .base import BackendUnavailable, Operations
from .clear_refs import ClearRefsOps
from .page_idle import PageIdleOps

log = logging.getLogger(__name__)

BACKENDS = ("auto", "page_idle", "clear_refs")


def create_ops(name: str, *, proc_root: str = "/proc", sys_root: str = "/sys") -> Operations:
    """The operations set called ``name``.

    Raises ValueError for an unknown name, BackendUnavailable when the requested backend (or,
    for ``auto``, every backend) cannot work here, AccessDenied when a privilege is missing.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)}")
    ops: Operations
    if name in ("auto", "page_idle"):
        ok, why = PageIdleOps.available(proc_root=proc_root, sys_root=sys_root)
        if ok:
            ops = PageIdleOps(proc_root=proc_root, sys_root=sys_root)
            reason = f"page_idle selected: {why}" if name == "auto" else "page_idle requested"
        elif name == "page_idle":
            raise BackendUnavailable(f"page_idle unavailable: {why}")
        else:
            ok2, why2 = ClearRefsOps.available(proc_root=proc_root)
            if not ok2:
                raise BackendUnavailable(f"no usable backend: page_idle unavailable: {why}; clear_refs unavailable: {why2}")
            ops = ClearRefsOps(proc_root=proc_root)
            reason = f"page_idle unavailable: {why}; using clear_refs"
    else:
        ok, why = ClearRefsOps.available(proc_root=proc_root)
        if not ok:
            raise BackendUnavailable(f"clear_refs unavailable: {why}")
        ops = ClearRefsOps(proc_root=proc_root)
        reason = "clear_refs requested"
    ops.selection_reason = reason  # type: ignore[attr-defined]  # set on both classes
    log.info("access-check backend: %s", reason)
    return ops
