"""Configured targets -> the processes to monitor now, as :class:`TargetSpec` objects.

Called by the sampler before each update interval. Every call rescans /proc (and the
matching cgroups), so new processes are picked up and exited ones dropped; processes are
keyed by (pid, start time), so a reused pid is a new process, never a continuation.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Callable

from exporter.config import templates
from exporter.config.model import Config, TargetConfig
from exporter.discovery import cgroups, kube, kube_source
from exporter.discovery.labels import cap_value
from exporter.model.engine import TargetSpec
from exporter.model.process import COMM_LEN, ProcessRef
from exporter.procfs import scan as procscan

log = logging.getLogger("exporter.discovery")

_KUBE_KEYS = ("pod_uid", "container_id", "qos_class")


def matches(t: TargetConfig, p: procscan.ProcessInfo) -> bool:
    """All given kinds of matcher must agree: comm (any of), exe (any of), cmdline (all)."""
    if t.comm and not any(p.comm == c[:COMM_LEN] for c in t.comm):
        return False
    if t.exe and (p.exe is None or p.exe not in t.exe):
        return False
    if t.cmdline and (p.cmdline is None or not all(rx.search(p.cmdline) for rx in t.cmdline)):
        return False
    return bool(t.comm or t.exe or t.cmdline)


class Discoverer:
    """Turns a :class:`Config` into target specs; one instance lives as long as the config.

    ``warnings`` holds the warnings of the latest :meth:`discover` (e.g. a group cap hit) and
    ``dropped_groups`` how many groups each target could not monitor in it, for a metric.
    """

    def __init__(
        self,
        config: Config,
        *,
        proc_root: str = "/proc",
        cgroup_root: str = "/sys/fs/cgroup",
        self_pid: int | None = None,
        kube_metadata: kube_source.KubeMetadata | None | bool = True,
    ) -> None:
        self.config = config
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self.self_pid = os.getpid() if self_pid is None else self_pid
        self.warnings: list[str] = []
        self.dropped_groups: dict[str, int] = {}
        #: pod names for kube-split targets (``True``: as the config and environment ask)
        self.kube = kube_source.from_config(config, os.environ) if kube_metadata is True else kube_metadata or None
        names: set[str] = set(self.kube.label_names if self.kube else ())
        for t in config.targets:
            names.update(t.group_by)
            names.update(k for k, _ in t.labels)
        self._label_names = tuple(sorted(names))
        needs = set().union(*(t.name_template.needs for t in config.targets if t.name_template is not None))
        self._want_exe = any(t.exe for t in config.targets) or "exe" in needs
        self._want_cmdline = any(t.cmdline for t in config.targets) or "exe" in needs  # argv[0] stands in for an unreadable exe
        # groups monitored last time, per target: kept first when the cap bites, so a new
        # group cannot push out one whose history is already being collected
        self._kept: dict[str, set[tuple[str, ...]]] = {}
        self._username = templates.username_lookup()

    def label_names(self) -> tuple[str, ...]:
        """Extra label names every spec carries (group_by keys and static label keys)."""
        return self._label_names

    def kube_names(self) -> kube_source.KubeNames | None:
        """The latest pod names for the metrics (None: no pod metadata asked for)."""
        return self.kube.names() if self.kube else None

    def close(self) -> None:
        """Stop what this discoverer started (the pod metadata thread), e.g. on reload."""
        if self.kube:
            self.kube.close()

    def discover(self) -> list[TargetSpec]:
        if self.kube:
            self.kube.start()  # once; off the sampler's path from then on
        procs = procscan.scan(self.proc_root, want_exe=self._want_exe, want_cmdline=self._want_cmdline)
        procs.pop(self.self_pid, None)  # never sample ourselves: we would measure our own sampling
        children: dict[int, list[int]] = defaultdict(list)
        for p in procs.values():
            children[p.ppid].append(p.pid)
        hierarchies = cgroups.hierarchies(self.cgroup_root) if any(t.cgroup for t in self.config.targets) else []
        cgroup_cache: dict[int, cgroups.ProcCgroups] = {}

        def proc_cgroups(pid: int) -> cgroups.ProcCgroups:
            if pid not in cgroup_cache:
                text = procscan.read_cgroup_file(self.proc_root, pid)
                cgroup_cache[pid] = cgroups.parse_proc_cgroup(text) if text else cgroups.ProcCgroups()
            return cgroup_cache[pid]

        claimed: set[int] = set()
        specs: list[TargetSpec] = []
        self.warnings = []
        self.dropped_groups = {}
        self._username = templates.username_lookup()
        for t in self.config.targets:
            found_in: dict[int, str] = {}  # pid -> cgroup it was found in (cgroup targets)
            if t.cgroup is not None:
                for h in hierarchies:
                    for pid, cg in cgroups.members(h, t.cgroup):
                        if pid in procs and pid not in claimed:
                            found_in[pid] = cg  # v1 memory (listed last) wins on hybrid
                mine = set(found_in)
            else:
                mine = {pid for pid, p in procs.items() if pid not in claimed and matches(t, p)}
            origin: dict[int, int] = {}  # descendant -> the matched process it descends from
            if t.include_children:
                mine = self._with_descendants(mine, children, claimed, origin)
            claimed |= mine
            if not mine:
                log.debug("target matches no process", extra={"kv": {"target": t.name, "rules": _rules(t), "why": (
                    "no process in a matching cgroup (or the cgroup does not exist)" if t.cgroup is not None
                    else "no process matches every rule given, or an earlier target claimed it")}})
            specs.extend(self._specs(t, mine, procs, found_in, proc_cgroups, origin))
        return _merge_same_series(specs)

    @staticmethod
    def _with_descendants(
        roots: set[int], children: dict[int, list[int]], claimed: set[int], origin: dict[int, int] | None = None
    ) -> set[int]:
        """Roots plus their descendants; a process another target already claimed is not
        entered (its subtree belongs to that claim). ``origin`` gets each descendant's root."""
        out = set(roots)
        stack = list(roots)
        while stack:
            parent = stack.pop()
            for child in children.get(parent, ()):
                if child not in out and child not in claimed:
                    out.add(child)
                    stack.append(child)
                    if origin is not None:
                        origin[child] = origin.get(parent, parent)
        return out

    def _specs(
        self,
        t: TargetConfig,
        pids: set[int],
        procs: dict[int, procscan.ProcessInfo],
        found_in: dict[int, str],
        proc_cgroups: Callable[[int], cgroups.ProcCgroups],
        origin: dict[int, int] | None = None,
    ) -> list[TargetSpec]:
        static = dict(t.labels)

        def spec(name: str, group: dict[str, str], members: list[int]) -> TargetSpec:
            refs = tuple(sorted(ProcessRef(pid, procs[pid].start_time, procs[pid].image) for pid in members))
            values = {**static, **group}
            return TargetSpec(cap_value(name), refs, tuple((k, cap_value(values.get(k, ""))) for k in self._label_names))

        template = t.name_template
        if template is None and not t.group_by:
            if not pids and self.config.remove_empty_groups:
                return []  # no process: no series at all, instead of damon_target_up 0
            return [spec(t.name, {}, list(pids))]

        # group key: (rendered name,) + group_by values with a template, else the values
        keys = (("name",) if template is not None else ()) + t.group_by
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for pid in pids:
            key = self._group_key(t, procs[pid], found_in, proc_cgroups)
            if template is not None:
                # a descendant (include_children) joins the group of the process it descends
                # from, as in process-exporter, instead of being named after itself
                named = procs[(origin or {}).get(pid, pid)]
                name = template.render(self._name_context(t, named, found_in, proc_cgroups))
                if not name:
                    continue  # nothing to call it (e.g. an optional regex group that did not match)
                key = (name, *key)
            groups[key].append(pid)
        order = sorted(groups, key=lambda k: _sort_key(keys, k))
        if len(order) > t.max_groups:
            previous = self._kept.get(t.name, set())
            if t.keep_groups == "largest":
                keep = set(_largest(order, groups, procs, previous, t.max_groups))
            else:
                kept = [k for k in order if k in previous][: t.max_groups]
                kept += [k for k in order if k not in previous][: t.max_groups - len(kept)]
                keep = set(kept)
            order = [k for k in order if k in keep]
            dropped = len(groups) - len(order)
            self.dropped_groups[t.name] = dropped
            if t.keep_groups != "largest":  # there, leaving the smaller groups out is the point
                self.warnings.append(
                    f"target '{t.name}': {len(groups)} groups by ({', '.join(keys)}) exceed "
                    f"max_groups {t.max_groups}; {dropped} not monitored"
                )
        self._kept[t.name] = set(order)
        if template is not None:
            return [spec(k[0], dict(zip(t.group_by, k[1:])), groups[k]) for k in order]
        return [spec(t.name, dict(zip(t.group_by, k)), groups[k]) for k in order]

    def _name_context(
        self,
        t: TargetConfig,
        p: procscan.ProcessInfo,
        found_in: dict[int, str],
        proc_cgroups: Callable[[int], cgroups.ProcCgroups],
    ) -> templates.NameContext:
        """What ``t``'s name template may use of process ``p``; only what it names is read."""
        assert t.name_template is not None
        needs = t.name_template.needs
        exe = ""
        if "exe" in needs:
            # the resolved /proc/PID/exe; argv[0] when the link is refused (another uid without
            # CAP_SYS_PTRACE), as process-exporter uses argv[0]
            exe = p.exe or ((p.cmdline or "").split(" ", 1)[0])
        matches: dict[str, str] = {}
        if "cmdline" in needs and p.cmdline is not None:
            for rx in t.cmdline:
                m = rx.search(p.cmdline)
                if m is not None:
                    matches.update({k: v for k, v in m.groupdict().items() if v is not None})
        username = self._username(templates.read_uid(self.proc_root, p.pid)) if "uid" in needs else ""
        meta = _cgroup_and_meta(p, found_in, proc_cgroups)[1] if "cgroup" in needs else None
        return templates.NameContext(
            comm=p.comm,
            exe=exe,
            username=username,
            matches=matches,
            pod_uid=meta.pod_uid if meta else "",
            container_id=meta.container_id if meta else "",
        )

    @staticmethod
    def _group_key(
        t: TargetConfig,
        p: procscan.ProcessInfo,
        found_in: dict[int, str],
        proc_cgroups: Callable[[int], cgroups.ProcCgroups],
    ) -> tuple[str, ...]:
        cg: str | None = None
        meta: kube.KubeMeta | None = None
        if "cgroup" in t.group_by or any(k in t.group_by for k in _KUBE_KEYS):
            cg, meta = _cgroup_and_meta(p, found_in, proc_cgroups)
        values = []
        for key in t.group_by:
            if key == "pid":
                values.append(str(p.pid))
            elif key == "comm":
                values.append(p.comm)
            elif key == "cgroup":
                values.append(cg or "")
            else:
                values.append(getattr(meta, key) if meta else "")
        return tuple(values)


def _cgroup_and_meta(
    p: procscan.ProcessInfo, found_in: dict[int, str], proc_cgroups: Callable[[int], cgroups.ProcCgroups]
) -> tuple[str | None, kube.KubeMeta | None]:
    """The cgroup a process was found in (else its own) and its pod metadata: from whichever
    of the process' paths is inside a pod."""
    cg = found_in.get(p.pid)
    own = proc_cgroups(p.pid)
    if cg is None:
        cg = own.effective
    return cg, kube.kube_metadata(cg) or kube.kube_metadata(own.memory) or kube.kube_metadata(own.v2)


def _rules(t: TargetConfig) -> str:
    """The target's match rules, as the config wrote them, for a log line."""
    parts = [f"comm={list(t.comm)}"] if t.comm else []
    parts += [f"exe={list(t.exe)}"] if t.exe else []
    parts += [f"cmdline={[getattr(rx, 'pattern', str(rx)) for rx in t.cmdline]}"] if t.cmdline else []
    parts += [f"cgroup={t.cgroup}"] if t.cgroup is not None else []
    return " ".join(parts)


def _merge_same_series(specs: list[TargetSpec]) -> list[TargetSpec]:
    """One spec per (name, labels): a templated name may render to a name another target
    already has; their processes then form one target, as process-exporter merges groups."""
    merged: dict[tuple, TargetSpec] = {}
    for s in specs:
        key = (s.name, s.labels)
        if key in merged:
            merged[key] = TargetSpec(s.name, tuple(sorted(set(merged[key].processes) | set(s.processes))), s.labels)
        else:
            merged[key] = s
    return list(merged.values())


#: ``keep_groups: largest``: a group monitored since the last discovery is only pushed out by
#: one with more than this many times its resident memory, so two programs of about the same
#: size do not take turns (each turn would start the newcomer's working-set window afresh)
LARGEST_MARGIN = 1.25


def _largest(
    order: list[tuple[str, ...]],
    groups: dict[tuple[str, ...], list[int]],
    procs: dict[int, procscan.ProcessInfo],
    previous: set[tuple[str, ...]],
    limit: int,
) -> list[tuple[str, ...]]:
    """The ``limit`` groups with the most resident memory (the sum of their processes' RSS;
    a page shared between two processes counts twice, which is fine for a ranking), groups
    already monitored weighted by LARGEST_MARGIN; ties go to the first in ``order``."""
    def score(k: tuple[str, ...]) -> float:
        rss = sum(procs[pid].rss_bytes for pid in groups[k])
        return rss * LARGEST_MARGIN if k in previous else float(rss)

    return sorted(order, key=score, reverse=True)[:limit]  # sorted is stable: ties keep order


def _sort_key(keys: tuple[str, ...], values: tuple[str, ...]) -> tuple:
    # pids sort numerically so 'max_groups' keeps the oldest-numbered ones deterministically
    return tuple((int(v) if k == "pid" and v.isdigit() else -1, v) for k, v in zip(keys, values))
