"""A tiny renderer for the subset of Helm's Go templates that helm/damon-exporter uses.

There is no helm binary here, so the chart tests render with this instead. It knows:
``{{ .Values.a.b }}``, ``.Release.*``, ``.Chart.*``, ``{{ .Files.Get "path" }}``,
``{{ include "name" . }}`` with ``{{ define "name" }}`` blocks, ``if``/``else``/``end``,
comments, the ``{{-``/``-}}`` whitespace trimming, pipelines ``|`` and the functions
``toYaml``, ``nindent``, ``indent``, ``quote``, ``not``, ``eq``. Anything else is an error,
so a template that strays outside the subset fails the tests instead of rendering wrongly.
A missing value is an error too (Helm would print ``<no value>``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"\{\{(-?)(\s*)(.*?)(\s*)(-?)\}\}", re.S)


class TemplateError(Exception):
    pass


class Missing:
    """A path that is not in the values: falsy in ``if``, an error when printed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __bool__(self) -> bool:
        return False


def _tokens(text: str) -> list[tuple[str, str]]:
    """('text', s) and ('action', expr) in order, with trimming applied."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(text):
        left_dash, lsp, expr, rsp, right_dash = m.groups()
        if left_dash and not lsp:
            raise TemplateError(f"'{{{{-' must be followed by a space: {m.group(0)!r}")
        chunk = text[pos : m.start()]
        if trim_next:
            chunk = chunk.lstrip()
        if left_dash:
            chunk = chunk.rstrip()
        out.append(("text", chunk))
        out.append(("action", expr))
        trim_next = bool(right_dash)
        pos = m.end()
    tail = text[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(tokens: list[tuple[str, str]], i: int, defines: dict, stop: tuple[str, ...]) -> tuple[list, int, str]:
    """Nodes until one of ``stop`` ('end', 'else'); returns (nodes, next index, stopper)."""
    nodes: list = []
    while i < len(tokens):
        kind, val = tokens[i]
        i += 1
        if kind == "text":
            if val:
                nodes.append(("text", val))
            continue
        if val.startswith("/*"):
            if not val.endswith("*/"):
                raise TemplateError(f"unterminated comment: {val!r}")
            continue
        word = val.split(None, 1)[0] if val else ""
        if word in stop:
            return nodes, i, word
        if word == "if":
            body, i, how = _parse(tokens, i, defines, ("else", "end"))
            other: list = []
            if how == "else":
                other, i, _ = _parse(tokens, i, defines, ("end",))
            nodes.append(("if", val[2:].strip(), body, other))
        elif word == "define":
            name = shlex.split(val)[1]
            body, i, _ = _parse(tokens, i, defines, ("end",))
            defines[name] = body
        elif word in ("range", "with", "template", "block", "else", "end"):
            raise TemplateError(f"'{word}' is outside the supported subset")
        else:
            nodes.append(("expr", val))
    if stop:
        raise TemplateError(f"missing {{{{ end }}}} (expected one of {stop})")
    return nodes, i, ""


def to_yaml(value: Any) -> str:
    """Helm's toYaml: sigs.k8s.io/yaml (sorted keys, block style), trailing newline cut."""
    if isinstance(value, Missing):
        raise TemplateError(f"toYaml of missing value {value.path}")
    return yaml.safe_dump(value, sort_keys=True, default_flow_style=False).rstrip("\n").removesuffix("\n...")


def _go_string(value: Any) -> str:
    if isinstance(value, Missing):
        raise TemplateError(f"missing value {value.path}")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, (dict, list)):
        raise TemplateError(f"printing a {type(value).__name__} needs toYaml: {value!r}")
    return str(value)


class Chart:
    def __init__(self, chart_dir: Path, release_name: str = "damon-exporter", values: dict | None = None) -> None:
        self.dir = chart_dir
        self.meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
        self.values = values if values is not None else yaml.safe_load((chart_dir / "values.yaml").read_text())
        self.release = {"Name": release_name, "Namespace": "default", "Service": "Helm"}
        self.defines: dict[str, list] = {}
        for helper in sorted((chart_dir / "templates").glob("_*.tpl")):
            _parse(_tokens(helper.read_text()), 0, self.defines, ())

    # -- values ----------------------------------------------------------------------------

    def _lookup(self, path: str) -> Any:
        parts = path.lstrip(".").split(".")
        roots = {
            "Values": self.values,
            "Release": self.release,
            "Chart": {k[0].upper() + k[1:]: v for k, v in self.meta.items()},
        }
        if parts[0] not in roots:
            raise TemplateError(f"unknown root .{parts[0]}")
        cur: Any = roots[parts[0]]
        for p in parts[1:]:
            if not isinstance(cur, dict) or p not in cur:
                return Missing(path)
            cur = cur[p]
        return cur

    def _arg(self, tok: str) -> Any:
        if tok == ".":
            return "."
        if tok.startswith("."):
            return self._lookup(tok)
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if tok in ("true", "false"):
            return tok == "true"
        return ("string", tok)

    def _command(self, words: list[str], piped: list) -> Any:
        """One pipeline stage; ``piped`` holds the previous stage's value (0 or 1 items)."""
        head, rest = words[0], words[1:]
        if head == ".Files.Get":
            (name,) = rest
            return (self.dir / self._value(name)).read_text()
        if head.startswith(".") and not rest and not piped:
            return self._lookup(head)
        args = [self._value(w) for w in rest] + piped
        if head == "toYaml":
            return to_yaml(*args)
        if head in ("nindent", "indent"):
            n, s = args
            body = "\n".join((" " * n + line) if line else line for line in _go_string(s).split("\n"))
            return ("\n" if head == "nindent" else "") + body
        if head == "quote":
            (v,) = args
            return '"' + _go_string(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if head == "not":
            (v,) = args
            return not v
        if head == "eq":
            a, b = args
            return a == b
        if head == "include":
            name, _dot = args
            return self._render(self.defines[name]) if name in self.defines else self._fail(f"no template {name!r}")
        raise TemplateError(f"function {head!r} is outside the supported subset")

    def _fail(self, msg: str) -> Any:
        raise TemplateError(msg)

    def _value(self, word: str) -> Any:
        if word.startswith('"'):
            return shlex.split(word)[0]
        v = self._arg(word)
        if isinstance(v, tuple):
            raise TemplateError(f"bare word {word!r}")
        return v

    def _eval(self, expr: str) -> Any:
        stages = [shlex.split(s, posix=False) for s in _split_pipes(expr)]
        value: list = []
        for words in stages:
            value = [self._command(words, value)]
        return value[0]

    # -- rendering -------------------------------------------------------------------------

    def _render(self, nodes: list) -> str:
        out: list[str] = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "expr":
                out.append(_go_string(self._eval(node[1])))
            else:
                _, cond, body, other = node
                out.append(self._render(body if _truthy(self._eval(cond)) else other))
        return "".join(out)

    def render(self, template: str) -> str:
        nodes, _, _ = _parse(_tokens((self.dir / "templates" / template).read_text()), 0, self.defines, ())
        return self._render(nodes)

    def render_all(self) -> dict[str, list[dict]]:
        """Every manifest template -> the objects it renders (empty when toggled off)."""
        out = {}
        for path in sorted((self.dir / "templates").glob("*.yaml")):
            out[path.name] = [d for d in yaml.safe_load_all(self.render(path.name)) if d]
        return out


def _truthy(v: Any) -> bool:
    return bool(v) and not isinstance(v, Missing)


def _split_pipes(expr: str) -> list[str]:
    parts, cur, quoted = [], "", False
    for ch in expr:
        if ch == '"':
            quoted = not quoted
        if ch == "|" and not quoted:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def value_paths(chart_dir: Path) -> set[str]:
    """Every ``.Values.x.y`` path any template or helper mentions."""
    found: set[str] = set()
    for path in (chart_dir / "templates").iterdir():
        found.update(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", path.read_text()))
    return {p.lstrip(".") for p in found}
