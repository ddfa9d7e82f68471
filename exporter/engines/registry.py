"""The one list of backends: names, availability checks, ``auto`` order, construction.

node_exporter's ``registerCollector`` and the kernel's ``damon_register_ops`` play this role
there. Config validation, the CLI's ``--backend`` choices, ``auto`` and the Helm chart's
values schema all take their list from :data:`BACKEND_NAMES` (a test ties the chart to it).

``auto`` tries the registered backends in registration order, which is the order of
preference: the kernel's own DAMON where it is free (kernel-class cost), then page-granular
and reclaim-neutral user-space sampling, then clear_refs. A backend whose availability
check passes but whose construction still refuses (BackendUnavailable: e.g. a kernel DAMON
missing a feature only visible once a kdamond is configured) is skipped the same way. The reason for the choice is logged
once at INFO and kept on the engine as ``selection_reason`` so that the landing page and
the CLI can show it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from exporter.model.attrs import AttrsError, MonitoringAttrs
from exporter.model.engine import Engine
from exporter.model.errors import BackendUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    """One way of seeing memory access."""

    name: str
    #: one line for ``--help`` and docs
    summary: str
    #: (ok, why) on this machine; never writes anything
    available: Callable[[str, str], tuple[bool, str]]
    #: build the engine (may raise BackendUnavailable / AccessDenied)
    create: Callable[[str, str], Engine]
    #: the ``snapshot`` command's default sample interval (short, interactive runs)
    snapshot_sample_interval: float = 0.1
    #: monitoring attributes for keys the config leaves unset (None: the generic defaults)
    default_attrs: Callable[[], MonitoringAttrs] | None = None


def _damon_sysfs_available(proc_root: str, sys_root: str) -> tuple[bool, str]:
    from exporter.engines.damon_sysfs.ownership import available

    return available(proc_root=proc_root, sys_root=sys_root)


def _damon_sysfs_create(proc_root: str, sys_root: str) -> Engine:
    from exporter.engines.damon_sysfs.engine import DamonSysfsEngine

    return DamonSysfsEngine(proc_root=proc_root, sys_root=sys_root)


def _damon_sysfs_defaults() -> MonitoringAttrs:
    from exporter.engines.damon_sysfs.engine import default_attrs

    return default_attrs()


def _page_idle_available(proc_root: str, sys_root: str) -> tuple[bool, str]:
    from exporter.engines.page_idle.ops_page_idle import PageIdleOps

    return PageIdleOps.available(proc_root=proc_root, sys_root=sys_root)


def _page_idle_create(proc_root: str, sys_root: str) -> Engine:
    from exporter.engines.page_idle.monitor import Monitor
    from exporter.engines.page_idle.ops_page_idle import PageIdleOps

    return Monitor(PageIdleOps(proc_root=proc_root, sys_root=sys_root))


def _clear_refs_available(proc_root: str, sys_root: str) -> tuple[bool, str]:
    from exporter.engines.clear_refs.smaps import available

    return available(proc_root)


def _clear_refs_create(proc_root: str, sys_root: str) -> Engine:
    from exporter.engines.clear_refs.engine import ReferencedBytesEngine
    from exporter.engines.clear_refs.smaps import ProcSmaps

    return ReferencedBytesEngine(ProcSmaps(proc_root))


#: registration order is ``auto``'s order of preference
REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> None:
    if backend.name in REGISTRY or backend.name == "auto":
        raise ValueError(f"backend {backend.name!r} registered twice")
    REGISTRY[backend.name] = backend


register(
    Backend(
        "damon_sysfs",
        "the kernel's own DAMON through /sys/kernel/mm/damon (Linux 6.6+, CONFIG_DAMON_VADDR and CONFIG_DAMON_SYSFS; root; only when no kdamond is configured)",
        _damon_sysfs_available,
        _damon_sysfs_create,
        snapshot_sample_interval=0.005,
        default_attrs=_damon_sysfs_defaults,
    )
)
register(
    Backend(
        "page_idle",
        "user-space DAMON over /sys/kernel/mm/page_idle (page-granular; needs CONFIG_IDLE_PAGE_TRACKING and root)",
        _page_idle_available,
        _page_idle_create,
    )
)
register(
    Backend(
        "clear_refs",
        "referenced-bytes curves from /proc/PID/clear_refs + smaps (any kernel; ptrace access to the target)",
        _clear_refs_available,
        _clear_refs_create,
    )
)

#: every name a config or flag may use, ``auto`` first
BACKEND_NAMES: tuple[str, ...] = ("auto", *REGISTRY)


def create_engine(
    name: str, *, proc_root: str = "/proc", sys_root: str = "/sys", skip: Mapping[str, str] | None = None,
) -> Engine:
    """The engine of backend ``name``, or for ``auto`` the first one usable here.

    ``auto`` passes over a backend whose availability check fails, whose construction raises
    anything at all (a kernel interface that errs only once written to, a missing privilege,
    a bug), and the backends in ``skip`` (name: why; the sampler's record of engines that
    failed their first steps). Every reason is kept in the engine's ``selection_reason``.

    Raises ValueError for an unknown name, BackendUnavailable when the requested backend (or,
    for ``auto``, every backend) cannot work here, AccessDenied when a privilege is missing.
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; expected one of: {', '.join(BACKEND_NAMES)}")
    if name != "auto":
        b = REGISTRY[name]
        ok, why = b.available(proc_root, sys_root)
        if not ok:
            raise BackendUnavailable(f"{name} unavailable: {why}")
        return _chosen(b.create(proc_root, sys_root), f"{name} requested")
    skip = skip or {}
    refused: list[str] = []
    passed: list[tuple[str, str]] = []
    for b in REGISTRY.values():
        if b.name in skip:
            refused.append(f"{b.name} failed: {skip[b.name]}")
            passed.append((b.name, "failed"))
            continue
        ok, why = b.available(proc_root, sys_root)
        if not ok:
            refused.append(f"{b.name} unavailable: {why}")
            passed.append((b.name, "unavailable"))
            continue
        try:
            engine = b.create(proc_root, sys_root)
        except Exception as e:  # noqa: BLE001 - any refusal means: try the next backend
            msg = str(e) or type(e).__name__
            refused.append(msg if msg.startswith(f"{b.name} unavailable: ") else f"{b.name} unavailable: {msg}")
            passed.append((b.name, "refused"))
            log.warning("access-check backend refused; trying the next", extra={"kv": {"backend": b.name, "err": refused[-1]}})
            continue
        reason = f"{b.name} selected: {why}" if not refused else f"{'; '.join(refused)}; using {b.name}"
        engine.passed_over = tuple(passed)
        return _chosen(engine, reason)
    raise BackendUnavailable(f"no usable backend: {'; '.join(refused)}")


def monitoring_attrs(backend: str, configured: MonitoringAttrs, given: Iterable[str]) -> MonitoringAttrs:
    """The attributes for ``backend``: the keys the config sets, the backend's defaults for
    the others. Where that mix is invalid (a 2 s sample interval against a 1 s default
    aggregation), the generic defaults fill in instead, as for every other backend."""
    b = REGISTRY.get(backend)
    if b is None or b.default_attrs is None:
        return configured
    given = set(given)
    base = b.default_attrs()
    try:
        return base.with_changes(**{k: getattr(configured, k) for k in given})
    except AttrsError:
        return configured


def _chosen(engine: Engine, reason: str) -> Engine:
    engine.selection_reason = reason
    log.info("access-check backend: %s", reason)
    return engine
