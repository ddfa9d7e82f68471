"""YAML text -> validated :class:`Config`, with every problem reported at once.

Each section has a small function that reads its nodes through :class:`Reader`, records
errors and carries on, so one run of ``check-config`` lists everything wrong in a file.
"""

from __future__ import annotations

import re

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from ..core.attrs import AttrsError, MonitoringAttrs
from ..core.durations import DurationError, parse_duration
from .model import (
    BACKENDS,
    GROUP_BY_KEYS,
    RESERVED_LABELS,
    Config,
    ConfigError,
    TargetConfig,
)
from .nodes import INVALID, Reader, line_of, one_line, type_name

TOP_KEYS = ("backend", "monitoring", "cold_age", "working_set_window", "cpu_budget", "targets")
MONITORING_KEYS = ("sample_interval", "aggregation_interval", "update_interval", "min_regions", "max_regions")
TARGET_KEYS = ("name", "match", "cgroup", "include_children", "group_by", "max_groups", "labels")
MATCH_KEYS = ("comm", "exe", "cmdline")

_DURATION_KEYS = ("sample_interval", "aggregation_interval", "update_interval")
# target names end up as label values and in log lines; keep them boring
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GLOB_MAGIC = re.compile(r"[*?\[]")


def load_config(path: str) -> Config:
    """Read and validate a config file; raise ConfigError (also when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: cannot read: not UTF-8 text (byte {e.start})"]) from None
    return parse_config(text, path)


def parse_config(text: str, path: str = "<config>") -> Config:
    """Validate config text; ``path`` only names the source in error lines."""
    r = Reader(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        raise ConfigError([_syntax_error(path, e)]) from None
    except yaml.YAMLError as e:  # not positioned (e.g. bad stream encoding)
        raise ConfigError([f"{path}: YAML error: {one_line(str(e))}"]) from None
    if root is None:
        raise ConfigError([f"{path}:1: empty config: expected a mapping with at least a 'targets' list"])
    if not isinstance(root, MappingNode):
        raise ConfigError(
            [f"{path}:{line_of(root)}: expected a mapping of settings at the top level, got {type_name(root)}"]
        )

    values: dict = {}
    targets: tuple[TargetConfig, ...] = ()
    seen_targets = False
    for key, _knode, vnode, sub in r.items(root, "", TOP_KEYS):
        if key == "backend":
            backend = r.get_str(vnode, sub)
            if backend is not INVALID:
                if backend in BACKENDS:
                    values["backend"] = backend
                else:
                    r.error(vnode, sub, f"unknown backend '{backend}' (expected one of: {', '.join(BACKENDS)})")
        elif key == "monitoring":
            attrs = _monitoring(r, vnode, sub)
            if attrs is not INVALID:
                values["monitoring"] = attrs
                given = {k.value for k, _ in vnode.value if isinstance(k.value, str)}
                values["monitoring_keys"] = tuple(k for k in MONITORING_KEYS if k in given)
        elif key in ("cold_age", "working_set_window"):
            seconds = _duration(r, vnode, sub)
            if seconds is not INVALID:
                values[key] = seconds
        elif key == "cpu_budget":
            budget = r.get_number(vnode, sub)
            if budget is not INVALID:
                if 0 < budget <= 1:
                    values["cpu_budget"] = budget
                else:
                    r.error(vnode, sub, f"must be greater than 0 and at most 1 (a share of one CPU core), got {_num(budget)}")
        elif key == "targets":
            seen_targets = True
            targets = _targets(r, vnode, sub)
    if not seen_targets:
        r.error(root, "targets", "missing: at least one target is required")
    if r.errors:
        raise ConfigError(r.error_lines())
    return Config(path=None if path == "<config>" else path, targets=targets, **values)


def _syntax_error(path: str, e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    where = f"{path}:{mark.line + 1}" if mark else path
    problem = one_line(e.problem or "")
    context = one_line(e.context or "")
    if context and e.context_mark is not None and e.context_mark is not mark:
        context += f" at line {e.context_mark.line + 1}"
    detail = f"{problem} ({context})" if problem and context else (problem or context or "invalid YAML")
    return f"{where}: YAML syntax error: {detail}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _duration(r: Reader, node: Node, keypath: str) -> float:
    if isinstance(node, (MappingNode, SequenceNode)):
        r.error(node, keypath, f"expected a duration like 500ms, 10s or 2m, got {type_name(node)}")
        return INVALID
    try:
        return parse_duration(r.scalar(node))
    except DurationError as e:
        r.error(node, keypath, str(e))
        return INVALID


def _monitoring(r: Reader, node: Node, keypath: str) -> MonitoringAttrs:
    mapping = r.get_mapping(node, keypath)
    if mapping is INVALID:
        return INVALID
    given: dict[str, float | int] = {}
    where: dict[str, tuple[Node, str]] = {}
    ok = True
    for key, _knode, vnode, sub in r.items(mapping, keypath, MONITORING_KEYS):
        value = _duration(r, vnode, sub) if key in _DURATION_KEYS else r.get_int(vnode, sub)
        if value is INVALID:
            ok = False
        else:
            given[key] = value
            where[key] = (vnode, sub)
    try:
        attrs = MonitoringAttrs(**given)
    except AttrsError as e:
        message = str(e)
        named = [k for k in MONITORING_KEYS if re.search(rf"\b{k}\b", message)]
        if not ok and any(k not in given for k in named):
            # the check involves a value that was already reported as bad (and replaced by
            # its default here): a second error about it would only be noise
            return INVALID
        # blame the attribute the message names first among those the user actually set
        blamed = sorted((message.find(k), k) for k in named if k in where)
        if blamed:
            vnode, sub = where[blamed[0][1]]
            r.error(vnode, sub, message)
        else:
            r.error(mapping, keypath, message)
        return INVALID
    return attrs if ok else INVALID


def _targets(r: Reader, node: Node, keypath: str) -> tuple[TargetConfig, ...]:
    if not isinstance(node, SequenceNode):
        r.error(node, keypath, f"expected a list of targets, got {type_name(node)}")
        return ()
    if not node.value:
        r.error(node, keypath, "empty: at least one target is required")
        return ()
    out = []
    names: dict[str, int] = {}
    for i, item in enumerate(node.value):
        target = _target(r, item, f"{keypath}[{i}]", names)
        if target is not INVALID:
            out.append(target)
    return tuple(out)


def _target(r: Reader, node: Node, keypath: str, names: dict[str, int]) -> TargetConfig:
    mapping = r.get_mapping(node, keypath)
    if mapping is INVALID:
        return INVALID
    ok = True
    fields: dict = {"line": line_of(mapping)}
    present: dict[str, Node] = {}
    for key, knode, vnode, sub in r.items(mapping, keypath, TARGET_KEYS):
        present[key] = knode
        if key == "name":
            value = _target_name(r, vnode, sub, names)
        elif key == "match":
            value = _match(r, vnode, sub)
        elif key == "cgroup":
            value = _cgroup(r, vnode, sub)
        elif key == "include_children":
            value = r.get_bool(vnode, sub)
        elif key == "group_by":
            value = _group_by(r, vnode, sub)
        elif key == "max_groups":
            value = r.get_int(vnode, sub)
            if value is not INVALID and value < 1:
                r.error(vnode, sub, f"must be at least 1, got {value}")
                value = INVALID
        else:  # labels
            value = _labels(r, vnode, sub)
        if value is INVALID:
            ok = False
        elif key == "match":
            fields.update(value)
        else:
            fields[key] = value
    if "name" not in present:
        r.error(mapping, keypath, "missing 'name' (it becomes the target label)")
        ok = False
    if "match" in present and "cgroup" in present:
        r.error(mapping, keypath, "has both 'match' and 'cgroup'; use exactly one (or two targets)")
        ok = False
    elif "match" not in present and "cgroup" not in present:
        r.error(mapping, keypath, "needs either 'match' (comm, exe, cmdline) or 'cgroup'")
        ok = False
    if "max_groups" in present and "group_by" not in present:
        r.error(present["max_groups"], f"{keypath}.max_groups", "only applies together with group_by")
        ok = False
    if not ok:
        return INVALID
    return TargetConfig(**fields)


def _target_name(r: Reader, node: Node, keypath: str, names: dict[str, int]) -> str:
    name = r.get_str(node, keypath)
    if name is INVALID:
        return INVALID
    if not _NAME.fullmatch(name):
        r.error(
            node,
            keypath,
            f"bad target name {name!r}: use 1 to 128 letters, digits, '_', '.', ':' or '-' (not starting with '.', ':' or '-')",
        )
        return INVALID
    if name in names:
        r.error(node, keypath, f"duplicate target name '{name}' (first at line {names[name]})")
        return INVALID
    names[name] = line_of(node)
    return name


def _match(r: Reader, node: Node, keypath: str) -> dict:
    mapping = r.get_mapping(node, keypath)
    if mapping is INVALID:
        return INVALID
    out: dict = {}
    ok = True
    for key, _knode, vnode, sub in r.items(mapping, keypath, MATCH_KEYS):
        items = r.get_str_list(vnode, sub)
        if items is INVALID:
            ok = False
            continue
        if len(items) != len(vnode.value):
            ok = False  # an element had the wrong type (reported)
        if not vnode.value:
            r.error(vnode, sub, "empty list (leave the key out instead)")
            ok = False
            continue
        values = []
        for value, inode, isub in items:
            if key == "cmdline":
                try:
                    values.append(re.compile(value))
                except re.error as e:
                    r.error(inode, isub, f"bad regex {value!r}: {e}")
                    ok = False
            elif not value:
                r.error(inode, isub, "empty string")
                ok = False
            elif key == "exe" and not value.startswith("/"):
                r.error(inode, isub, f"must be an absolute path, got {value!r} (use comm for a process name)")
                ok = False
            else:
                values.append(value)
        out[key] = tuple(values)
    if ok and not out:
        r.error(mapping, keypath, "needs at least one of comm, exe, cmdline")
        ok = False
    return out if ok else INVALID


def _cgroup(r: Reader, node: Node, keypath: str) -> str:
    pattern = r.get_str(node, keypath, "a cgroup path")
    if pattern is INVALID:
        return INVALID
    if not pattern.strip():
        r.error(node, keypath, "empty cgroup path (use '/' for the root)")
        return INVALID
    parts = [p for p in pattern.strip("/").split("/") if p]
    for part in parts:
        if part in (".", ".."):
            r.error(node, keypath, f"'{part}' is not allowed in a cgroup path: {pattern!r}")
            return INVALID
        if "**" in part and part != "**":
            r.error(node, keypath, f"'**' must be a whole path component, got {part!r} in {pattern!r}")
            return INVALID
        if "[" in part and "]" not in part:
            r.error(node, keypath, f"unclosed '[' in {part!r}")
            return INVALID
    return "/".join(parts) or "/"


def _group_by(r: Reader, node: Node, keypath: str) -> tuple[str, ...]:
    items = r.get_str_list(node, keypath)
    if items is INVALID:
        return INVALID
    ok = len(items) == len(node.value)
    keys: list[str] = []
    for value, inode, isub in items:
        if value not in GROUP_BY_KEYS:
            r.error(inode, isub, f"unknown group_by key '{value}' (expected one of: {', '.join(GROUP_BY_KEYS)})")
            ok = False
        elif value in keys:
            r.error(inode, isub, f"duplicate group_by key '{value}'")
            ok = False
        else:
            keys.append(value)
    return tuple(keys) if ok else INVALID


def _labels(r: Reader, node: Node, keypath: str) -> tuple[tuple[str, str], ...]:
    mapping = r.get_mapping(node, keypath)
    if mapping is INVALID:
        return INVALID
    ok = True
    out = []
    for key, knode, vnode, sub in r.items(mapping, keypath, None):
        if not _LABEL_NAME.fullmatch(key) or key.startswith("__"):
            r.error(knode, sub, f"bad label name {key!r}: use letters, digits and '_', not starting with a digit or '__'")
            ok = False
            continue
        if key in RESERVED_LABELS:
            r.error(knode, sub, f"label name '{key}' is reserved (used by the exporter or by group_by)")
            ok = False
            continue
        value = r.get_str(vnode, sub)
        if value is INVALID:
            ok = False
            continue
        out.append((key, value))
    return tuple(sorted(out)) if ok else INVALID
