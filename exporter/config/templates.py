"""Target name templates, as process-exporter names its groups: ``name: "{{.Comm}}"`` makes one
target per distinct rendered name, so one config line covers every program on a node.

Only the field references process-exporter users write are accepted (``{{.Comm}}``,
``{{.ExeBase}}``, ``{{.ExeFull}}``, ``{{.Username}}``, ``{{.Matches.NAME}}``, ``{{.PodUID}}``,
``{{.ContainerID}}``), with Go's optional spaces inside the braces; anything else (pipelines,
functions, conditionals) is refused when the config is read, so a template can never fail at
run time. Rendering is a pure function of a :class:`NameContext`; the discoverer builds the
context from what it already read for matching, plus the few extra reads listed in
:attr:`NameTemplate.needs`.
"""

from __future__ import annotations

import os
import pwd
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

#: the fields a template may name, and what each needs read per process
FIELDS: dict[str, str] = {
    "Comm": "comm",
    "ExeBase": "exe",
    "ExeFull": "exe",
    "Username": "uid",
    "PodUID": "cgroup",
    "ContainerID": "cgroup",
}
_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_FIELD = re.compile(r"\.([A-Za-z][A-Za-z0-9]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?")


class TemplateError(ValueError):
    """A name template that cannot be used; the message says what to write instead."""


@dataclass(frozen=True)
class NameContext:
    """The facts of one process a name can be made of ('' where unknown)."""

    comm: str
    exe: str = ""
    username: str = ""
    matches: Mapping[str, str] = field(default_factory=dict)
    pod_uid: str = ""
    container_id: str = ""


@dataclass(frozen=True)
class NameTemplate:
    """A parsed template: literal text and field references, in order."""

    source: str
    #: ('text', literal) or ('field', Name) or ('match', GROUP)
    parts: tuple[tuple[str, str], ...]

    @property
    def needs(self) -> frozenset[str]:
        """What must be read per process: a subset of {'comm', 'exe', 'uid', 'cgroup', 'cmdline'}."""
        out = set()
        for kind, value in self.parts:
            if kind == "field":
                out.add(FIELDS[value])
            elif kind == "match":
                out.add("cmdline")
        return frozenset(out)

    @property
    def match_groups(self) -> tuple[str, ...]:
        return tuple(v for k, v in self.parts if k == "match")

    def render(self, ctx: NameContext) -> str:
        out = []
        for kind, value in self.parts:
            if kind == "text":
                out.append(value)
            elif kind == "match":
                out.append(ctx.matches.get(value) or "")
            elif value == "Comm":
                out.append(ctx.comm)
            elif value == "ExeBase":
                out.append(os.path.basename(ctx.exe) if ctx.exe else "")
            elif value == "ExeFull":
                out.append(ctx.exe)
            elif value == "Username":
                out.append(ctx.username)
            elif value == "PodUID":
                out.append(ctx.pod_uid)
            else:  # ContainerID
                out.append(ctx.container_id)
        return "".join(out)


def is_template(name: str) -> bool:
    return "{{" in name


def parse_template(source: str) -> NameTemplate:
    """Parse ``source``; raise TemplateError naming the first unusable piece."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(source):
        if m.start() > pos:
            parts.append(("text", source[pos : m.start()]))
        pos = m.end()
        body = m.group(1)
        fm = _FIELD.fullmatch(body)
        if fm is None:
            raise TemplateError(f"unsupported template action {m.group(0)!r}: only field references such as {{{{.Comm}}}} are allowed ({_allowed()})")
        name, sub = fm.group(1), fm.group(2)
        if name == "Matches":
            if sub is None:
                raise TemplateError("{{.Matches}} needs a group name: {{.Matches.NAME}}, NAME a named group (?P<NAME>...) of a cmdline regex")
            parts.append(("match", sub))
        elif name in FIELDS and sub is None:
            parts.append(("field", name))
        else:
            raise TemplateError(f"unknown field {m.group(0)!r} (expected one of: {_allowed()})")
    rest = source[pos:]
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"unbalanced '{{{{' or '}}}}' in {source!r}")
    if rest:
        parts.append(("text", rest))
    if not any(k != "text" for k, _ in parts):
        raise TemplateError(f"no field reference in {source!r}")
    return NameTemplate(source, tuple(parts))


def _allowed() -> str:
    return ", ".join([*(f"{{{{.{f}}}}}" for f in FIELDS), "{{.Matches.NAME}}"])


def read_uid(proc_root: str, pid: int) -> int | None:
    """The process' real uid (first field of ``Uid:`` in /proc/PID/status), as
    process-exporter reports it; None if the process is gone."""
    try:
        with open(f"{proc_root}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def username_lookup() -> Callable[[int | None], str]:
    """uid -> user name through the passwd database, falling back to the number (a container
    rarely knows the node's users); one lookup per uid per discovery pass."""
    cache: dict[int | None, str] = {}

    def lookup(uid: int | None) -> str:
        if uid not in cache:
            if uid is None:
                cache[uid] = ""
            else:
                try:
                    cache[uid] = pwd.getpwuid(uid).pw_name
                except KeyError:
                    cache[uid] = str(uid)
        return cache[uid]

    return lookup
