"""YAML text -> validated :class:`Config`, with every problem reported at once.

Each section has a small function that reads its nodes through :class:`Reader`, records
errors and carries on, so one run of ``check-config`` lists everything wrong in a file.
"""

from __future__ import annotations

import re

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from exporter.config.model import (
    BACKENDS,
    GROUP_BY_KEYS,
    KEEP_GROUPS,
    KUBE_METADATA_SOURCES,
    KUBE_RESPONSE_MAX,
    KUBE_RESPONSE_MIN,
    MAX_POD_LABELS,
    MEMORY_LIMIT_MAX,
    MEMORY_LIMIT_MIN,
    RESERVED_LABELS,
    Config,
    ConfigError,
    KubeConfig,
    TargetConfig,
    pod_label_name,
)
from exporter.config.nodes import INVALID, Reader, line_of, type_name
from exporter.config.regex import RegexError, compile_regex
from exporter.config.templates import TemplateError, is_template, parse_template
from exporter.config.yamlfile import YAMLFileError, compose, read_text
from exporter.model.attrs import AttrsError, MonitoringAttrs
from exporter.model.durations import DurationError, parse_duration

TOP_KEYS = ("backend", "monitoring", "cold_age", "working_set_window", "cpu_budget", "memory_limit", "remove_empty_groups",
            "histograms", "kubernetes", "targets")
KUBE_KEYS = ("metadata", "token_file", "kubelet_url", "kubelet_ca_file", "kubelet_insecure_skip_verify", "timeout", "max_response_size",
             "pod_labels")
MONITORING_KEYS = ("sample_interval", "aggregation_interval", "update_interval", "min_regions", "max_regions")
TARGET_KEYS = ("name", "match", "cgroup", "include_children", "group_by", "max_groups", "keep_groups", "labels")
MATCH_KEYS = ("comm", "exe", "cmdline")

_DURATION_KEYS = ("sample_interval", "aggregation_interval", "update_interval")
#: the longest value each duration key accepts. Past these a value is a typo or mischief:
#: ``sample_interval: 1000y`` overflows the sampler's sleeps, and ``aggregation_interval:
#: 100y`` would defer every reload (applied at the next aggregation) by a century.
DURATION_MAX: dict[str, str] = {
    "sample_interval": "1m",
    "aggregation_interval": "1h",
    "update_interval": "1h",
    "cold_age": "30d",
    "working_set_window": "30d",
    "kubernetes.timeout": "30s",
}
#: the shortest value each interval accepts. Below these the exporter's own cost grows
#: without bound and its CPU budget cannot help (1 ms samples of one idle process cost half a
#: core): 5 ms is kernel DAMON's own default sampling, 100 ms aggregations give even kernel
#: DAMON 20 samples, and rescanning /proc for targets more than once a second finds nothing new.
DURATION_MIN: dict[str, str] = {
    "sample_interval": "5ms",
    "aggregation_interval": "100ms",
    "update_interval": "1s",
    "kubernetes.timeout": "100ms",
}
# target names end up as label values and in log lines; keep them boring
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load_config(path: str) -> Config:
    """Read and validate a config file; raise ConfigError (also when it cannot be read,
    is larger than MAX_CONFIG_BYTES or is not UTF-8)."""
    try:
        text = read_text(path)
    except YAMLFileError as e:
        raise ConfigError(e.lines) from None
    return parse_config(text, path)


def parse_config(text: str, path: str = "<config>") -> Config:
    """Validate config text; ``path`` only names the source in error lines."""
    try:
        root = compose(text, path)
    except YAMLFileError as e:
        raise ConfigError(e.lines) from None
    if root is None:
        raise ConfigError([f"{path}:1: empty config: expected a mapping with at least a 'targets' list"])
    if not isinstance(root, MappingNode):
        raise ConfigError(
            [f"{path}:{line_of(root)}: expected a mapping of settings at the top level, got {type_name(root)}"]
        )
    try:
        return _config(Reader(path), root, path)
    except RecursionError:  # e.g. a self-merging anchor; never a traceback, never a dead thread
        raise ConfigError([f"{path}:{line_of(root)}: YAML nested too deeply (or a recursive alias)"]) from None


def _config(r: Reader, root: MappingNode, path: str) -> Config:
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
            seconds = _duration(r, vnode, sub, key)
            if seconds is not INVALID:
                values[key] = seconds
        elif key == "cpu_budget":
            budget = r.get_number(vnode, sub)
            if budget is not INVALID:
                if 0 < budget <= 1:
                    values["cpu_budget"] = budget
                else:
                    r.error(vnode, sub, f"must be greater than 0 and at most 1 (a share of one CPU core), got {_num(budget)}")
        elif key == "memory_limit":
            limit = _memory_limit(r, vnode, sub)
            if limit is not INVALID:
                values["memory_limit"] = limit
        elif key in ("remove_empty_groups", "histograms"):
            flag = r.get_bool(vnode, sub)
            if flag is not INVALID:
                values[key] = flag
        elif key == "kubernetes":
            kube = _kubernetes(r, vnode, sub)
            if kube is not INVALID:
                values["kubernetes"] = kube
        elif key == "targets":
            seen_targets = True
            targets = _targets(r, vnode, sub)
    if not seen_targets:
        r.error(root, "targets", "missing: at least one target is required")
    kube = values.get("kubernetes", KubeConfig())
    if kube.metadata != "off":
        exported = {pod_label_name(k) for k in kube.pod_labels}
        for i, t in enumerate(targets):
            for name in sorted(exported.intersection(k for k, _ in t.labels)):
                r.error(t.line, f"targets[{i}].labels.{name}", "reserved: kubernetes.pod_labels exports a pod label under this name")
    if r.errors:
        raise ConfigError(r.error_lines())
    return Config(path=None if path == "<config>" else path, targets=targets, **values)


#: a Kubernetes label key: an optional DNS-subdomain prefix and '/', then a name of at most 63
#: characters, alphanumeric at both ends
_KUBE_LABEL_KEY = re.compile(r"(?:[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def _kubernetes(r: Reader, node: Node, keypath: str) -> KubeConfig:
    mapping = r.get_mapping(node, keypath)
    if mapping is INVALID:
        return INVALID
    values: dict = {}
    ok = True
    for key, _knode, vnode, sub in r.items(mapping, keypath, KUBE_KEYS):
        if key == "metadata":
            value = r.get_str(vnode, sub)
            if value is not INVALID and value not in KUBE_METADATA_SOURCES:
                r.error(vnode, sub, f"unknown metadata source '{value}' (expected one of: {', '.join(KUBE_METADATA_SOURCES)})")
                value = INVALID
        elif key in ("kubelet_url", "kubelet_ca_file", "token_file"):
            value = r.get_str(vnode, sub)
            if value is not INVALID and key == "kubelet_url" and not re.fullmatch(r"https://[^/?#\s]+", value):
                r.error(vnode, sub, f"expected https://HOST:PORT (no path), got {_short(value)}")
                value = INVALID
            elif value is not INVALID and key != "kubelet_url" and not value.startswith("/"):
                r.error(vnode, sub, f"must be an absolute path, got {_short(value)}")
                value = INVALID
        elif key == "kubelet_insecure_skip_verify":
            value = r.get_bool(vnode, sub)
        elif key == "timeout":
            value = _duration(r, vnode, sub, "kubernetes.timeout")
        elif key == "max_response_size":
            value = _bounded_size(r, vnode, sub, KUBE_RESPONSE_MIN, KUBE_RESPONSE_MAX)
        else:
            value = _pod_labels(r, vnode, sub)
        if value is INVALID:
            ok = False
        else:
            values[key] = value
    return KubeConfig(**values) if ok else INVALID


def _pod_labels(r: Reader, node: Node, keypath: str) -> tuple[str, ...]:
    items = r.get_str_list(node, keypath)
    if items is INVALID:
        return INVALID
    ok = len(items) == len(node.value)
    if len(node.value) > MAX_POD_LABELS:
        r.error(node, keypath, f"{len(node.value)} pod labels, at most {MAX_POD_LABELS} (each is one more label on every series)")
        return INVALID
    keys: list[str] = []
    exported: dict[str, tuple[str, int]] = {}
    for value, inode, isub in items:
        name = pod_label_name(value)
        if not _KUBE_LABEL_KEY.fullmatch(value):
            r.error(inode, isub, f"not a Kubernetes label key: {_short(value)}")
            ok = False
        elif name in exported:
            first, line = exported[name]
            r.error(inode, isub, f"pod labels '{first}' (line {line}) and '{value}' would both be exported as '{name}'")
            ok = False
        else:
            exported[name] = (value, line_of(inode))
            keys.append(value)
    return tuple(keys) if ok else INVALID


#: byte units of ``memory_limit``: IEC (as in the README) and Kubernetes' spellings
_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "ki": 1 << 10, "mib": 1 << 20, "mi": 1 << 20, "gib": 1 << 30, "gi": 1 << 30,
               "kb": 1000, "k": 1000, "mb": 1000**2, "m": 1000**2, "gb": 1000**3, "g": 1000**3}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: object) -> int:
    """Bytes from ``96MiB``, ``96Mi``, ``100M``, ``1.5GiB`` or a plain integer; ValueError
    with the reason otherwise."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"expected a size like 96MiB, got {type(text).__name__}")
    if isinstance(text, int):
        return text
    m = _SIZE.match(text) if len(text) <= 32 else None
    if m is None or m[2].lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text[:32]!r} (expected a number and a unit: B, KiB, MiB, GiB, Ki, Mi, Gi, KB, MB, GB)")
    return int(float(m[1]) * _SIZE_UNITS[m[2].lower()])


def _size(r: Reader, node: Node, keypath: str) -> int:
    if not isinstance(node, ScalarNode):
        r.error(node, keypath, f"expected a size like 96MiB, got {type_name(node)}")
        return INVALID
    try:
        return parse_size(r.scalar(node))
    except ValueError as e:
        r.error(node, keypath, str(e))
        return INVALID


def _bounded_size(r: Reader, node: Node, keypath: str, low: int, high: int) -> int:
    size = _size(r, node, keypath)
    if size is not INVALID and not low <= size <= high:
        r.error(node, keypath, f"must be between {low >> 10} KiB and {high >> 20} MiB, got {size} bytes")
        return INVALID
    return size


def _memory_limit(r: Reader, node: Node, keypath: str) -> int:
    limit = _size(r, node, keypath)
    if limit is INVALID:
        return INVALID
    if limit != 0 and not MEMORY_LIMIT_MIN <= limit <= MEMORY_LIMIT_MAX:
        r.error(node, keypath, f"must be 0 (no limit) or between {MEMORY_LIMIT_MIN >> 20} MiB (the exporter itself) "
                               f"and {MEMORY_LIMIT_MAX >> 30} GiB, got {limit} bytes")
        return INVALID
    return limit


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def parse_bounded_duration(text: object, maximum: str, minimum: str | None = None) -> float:
    """``parse_duration`` that also refuses values above ``maximum`` or below ``minimum``
    (duration strings) and absurdly long spellings; every failure is a DurationError with
    the reason."""
    if isinstance(text, str) and len(text) > 64:
        raise DurationError(f"not a duration: {text[:20]!r}... ({len(text)} characters)")
    try:
        seconds = parse_duration(text)  # type: ignore[arg-type]
    except DurationError:
        raise
    except ValueError as e:  # e.g. int() of thousands of digits
        raise DurationError(f"not a duration: {e}") from None
    if seconds > parse_duration(maximum):
        raise DurationError(f"{text} is longer than the maximum of {maximum}")
    if minimum is not None and seconds < parse_duration(minimum):
        raise DurationError(f"{text} is shorter than the minimum of {minimum}")
    return seconds


def _duration(r: Reader, node: Node, keypath: str, key: str) -> float:
    if isinstance(node, (MappingNode, SequenceNode)):
        r.error(node, keypath, f"expected a duration like 500ms, 10s or 2m, got {type_name(node)}")
        return INVALID
    try:
        return parse_bounded_duration(r.scalar(node), DURATION_MAX[key], DURATION_MIN.get(key))
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
        value = _duration(r, vnode, sub, key) if key in _DURATION_KEYS else r.get_int(vnode, sub)
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
            name_node = vnode
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
        elif key == "keep_groups":
            value = r.get_str(vnode, sub)
            if value is not INVALID and value not in KEEP_GROUPS:
                r.error(vnode, sub, f"unknown keep_groups '{value}' (expected one of: {', '.join(KEEP_GROUPS)})")
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
    for key in ("max_groups", "keep_groups"):
        if key in present and "group_by" not in present and not is_template(fields.get("name", "")):
            r.error(present[key], f"{keypath}.{key}", "only applies together with group_by or a name template")
            ok = False
    if ok and is_template(fields["name"]):
        template = parse_template(fields["name"])  # already checked by _target_name
        groups = {g for rx in fields.get("cmdline", ()) for g in rx.groupindex}
        for group in template.match_groups:
            if group not in groups:
                r.error(name_node, f"{keypath}.name", f"{{{{.Matches.{group}}}}}: no cmdline regex of this target has a named group (?P<{group}>...)")
                ok = False
        fields["name_template"] = template
    if not ok:
        return INVALID
    return TargetConfig(**fields)


def _target_name(r: Reader, node: Node, keypath: str, names: dict[str, int]) -> str:

    name = r.get_str(node, keypath)
    if name is INVALID:
        return INVALID
    if is_template(name):
        try:
            parse_template(name)
        except TemplateError as e:
            r.error(node, keypath, f"bad name template: {e}")
            return INVALID
    elif not _NAME.fullmatch(name):
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
                    values.append(compile_regex(value))
                except RegexError as e:
                    r.error(inode, isub, f"bad regex {_short(value)}: {e}")
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


def _short(value: str, limit: int = 80) -> str:
    """A regex for an error line: quoted, and cut when long (it may be megabytes)."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"


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
