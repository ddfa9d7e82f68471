"""Cgroup membership for ``cgroup:`` targets, on unified (v2), hybrid and v1 layouts.

Which hierarchy governs memory depends on the machine: on a unified layout it is the v2
tree at the cgroup root; on hybrid/v1 layouts (older systemd, many Kubernetes nodes) it is
the v1 ``memory`` hierarchy, while systemd tracks services in the (controller-less) v2 tree
at ``unified/``. A configured path is therefore looked up in every hierarchy present, and a
process belongs to the target if it is in a matching cgroup of any of them.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from typing import Iterator

from exporter.procfs.io import decode_name

V2 = "v2"
V1_MEMORY = "v1-memory"


@dataclass(frozen=True)
class Hierarchy:
    kind: str  # V2 or V1_MEMORY
    root: str  # directory where this hierarchy's root cgroup is mounted


def hierarchies(cgroup_root: str) -> list[Hierarchy]:
    """The hierarchies to search, most specific for memory last (v2, then v1 memory)."""
    if os.path.exists(os.path.join(cgroup_root, "cgroup.controllers")):
        return [Hierarchy(V2, cgroup_root)]  # unified layout
    found = []
    unified = os.path.join(cgroup_root, "unified")
    if os.path.exists(os.path.join(unified, "cgroup.procs")):
        found.append(Hierarchy(V2, unified))
    memory = os.path.join(cgroup_root, "memory")
    if os.path.exists(os.path.join(memory, "cgroup.procs")):
        found.append(Hierarchy(V1_MEMORY, memory))
    return found


def _subdirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
    except OSError:  # removed while we walk
        return []


def expand(root: str, pattern: str) -> list[str]:
    """Cgroups (relative paths, '' = root) under ``root`` matching ``pattern``:
    ``*``/``?``/``[..]`` match within one path component, ``**`` any number of components
    (including none)."""
    parts = [p for p in pattern.strip("/").split("/") if p]
    found: set[str] = set()

    def walk(rel: str, i: int) -> None:
        if i == len(parts):
            found.add(rel)
            return
        part = parts[i]
        here = os.path.join(root, rel) if rel else root
        if part == "**":
            walk(rel, i + 1)
            for sub in _subdirs(here):
                walk(f"{rel}/{sub}" if rel else sub, i)
        elif any(c in part for c in "*?["):
            for sub in _subdirs(here):
                if fnmatch.fnmatchcase(sub, part):
                    walk(f"{rel}/{sub}" if rel else sub, i + 1)
        elif os.path.isdir(os.path.join(here, part)):
            walk(f"{rel}/{part}" if rel else part, i + 1)

    walk("", 0)
    return sorted(found)


def _topmost(rels: list[str]) -> list[str]:
    """Drop cgroups that lie below another one in the list (they are walked anyway)."""
    out: list[str] = []
    for rel in sorted(rels):
        if not any(rel == top or top == "" or rel.startswith(top + "/") for top in out):
            out.append(rel)
    return out


def _read_procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def members(h: Hierarchy, pattern: str) -> Iterator[tuple[int, str]]:
    """(pid, cgroup path with a leading '/') of every process in a matching cgroup or in any
    cgroup below one, read fresh from cgroup.procs."""
    for top in _topmost(expand(h.root, pattern)):
        start = os.path.join(h.root, top) if top else h.root
        for dirpath, _dirs, _files in os.walk(start):
            rel = os.path.relpath(dirpath, h.root)
            # a label value: the directory name's bytes decoded the one way names are
            cg = "/" if rel == "." else "/" + decode_name(os.fsencode(rel))
            for pid in _read_procs(dirpath):
                yield pid, cg


@dataclass(frozen=True)
class ProcCgroups:
    """A process' own cgroup paths, from /proc/PID/cgroup."""

    v2: str | None = None  # the '0::/path' entry
    memory: str | None = None  # the v1 'N:memory:/path' entry (hybrid and v1 layouts)

    @property
    def effective(self) -> str | None:
        """The path that governs the process' memory: the v1 memory cgroup where there is
        one (hybrid/v1), otherwise the v2 path."""
        return self.memory if self.memory is not None else self.v2


def parse_proc_cgroup(text: str) -> ProcCgroups:
    v2 = memory = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier_id, controllers, path = parts
        if hier_id == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            memory = path
    return ProcCgroups(v2=v2, memory=memory)
