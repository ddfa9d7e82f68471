"""Typed access to a composed YAML tree, collecting errors with their line numbers.

We validate the *node* tree (``yaml.compose``) rather than the constructed Python objects
because only nodes remember where they came from: every error can then name its line, and
duplicate keys (which ``yaml.safe_load`` silently lets the last one win) are caught.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_TAG_NAMES = {
    "tag:yaml.org,2002:str": "str",
    "tag:yaml.org,2002:int": "int",
    "tag:yaml.org,2002:float": "float",
    "tag:yaml.org,2002:bool": "bool",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "timestamp",
    "tag:yaml.org,2002:binary": "binary",
}

#: returned by the ``get_*`` helpers when the value was wrong (the error is already recorded)
INVALID: Any = object()


def type_name(node: Node) -> str:
    """The user-facing name of a node's type, as used in 'expected X, got Y'."""
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "list"
    return _TAG_NAMES.get(node.tag, f"tag {node.tag}")


def line_of(node: Node) -> int:
    return node.start_mark.line + 1


class Reader:
    """Wraps one composed document: records errors, converts scalars, walks mappings."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[tuple[int, int, str]] = []  # (line, order, text) for stable sorting
        self._constructor = yaml.constructor.SafeConstructor()

    # -- errors --------------------------------------------------------------------------

    def error(self, at: Node | int, keypath: str, message: str) -> None:
        line = at if isinstance(at, int) else line_of(at)
        text = f"{self.path}:{line}: {keypath}: {message}" if keypath else f"{self.path}:{line}: {message}"
        self.errors.append((line, len(self.errors), text))

    def error_lines(self) -> list[str]:
        """Errors in file order (then in the order found), so they read top to bottom."""
        return [text for _, _, text in sorted(self.errors)]

    # -- structure -----------------------------------------------------------------------

    def scalar(self, node: ScalarNode) -> Any:
        """The Python value of a scalar node, as yaml.safe_load would give it."""
        return self._constructor.construct_object(node, deep=True)

    def items(self, node: MappingNode, keypath: str, allowed: tuple[str, ...] | None) -> Iterator[tuple[str, Node, Node, str]]:
        """Yield (key, key node, value node, key path) of a mapping, reporting non-string,
        duplicate and (when ``allowed`` is given) unknown keys instead of yielding them."""
        own = [kv for kv in node.value if kv[0].tag != "tag:yaml.org,2002:merge"]
        try:
            self._constructor.flatten_mapping(node)  # honour '<<: *anchor' merge keys
        except yaml.YAMLError as e:
            self.error(node, keypath, f"bad merge key: {one_line(getattr(e, 'problem', None) or str(e))}")
            return
        merged: dict[object, tuple[Node, Node]] = {}
        if len(node.value) > len(own):
            # merged entries come first; explicit keys override them and, among merged
            # mappings, the later entry wins: exactly what yaml.safe_load would build
            explicit = {k.value for k, _ in own if isinstance(k, ScalarNode)}
            for knode, vnode in node.value[: len(node.value) - len(own)]:
                if not (isinstance(knode, ScalarNode) and knode.value in explicit):
                    merged[knode.value if isinstance(knode, ScalarNode) else id(knode)] = (knode, vnode)
        seen: dict[str, int] = {}
        for knode, vnode in [*merged.values(), *own]:
            if not isinstance(knode, ScalarNode) or knode.tag != "tag:yaml.org,2002:str":
                self.error(knode, keypath or "(top level)", f"keys must be strings, got {type_name(knode)}")
                continue
            key = knode.value
            sub = f"{keypath}.{key}" if keypath else key
            if key in seen:
                self.error(knode, sub, f"duplicate key (first at line {seen[key]})")
                continue
            seen[key] = line_of(knode)
            if allowed is not None and key not in allowed:
                self.error(knode, sub, unknown_key_message(key, allowed))
                continue
            yield key, knode, vnode, sub

    # -- typed getters (return INVALID after recording an error) -------------------------

    def get_mapping(self, node: Node, keypath: str) -> MappingNode:
        if isinstance(node, MappingNode):
            return node
        self.error(node, keypath, f"expected a mapping, got {type_name(node)}")
        return INVALID

    def get_str(self, node: Node, keypath: str, what: str = "a string") -> str:
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:str":
            return node.value
        hint = " (quote it)" if isinstance(node, ScalarNode) and type_name(node) in ("int", "float", "bool", "timestamp") else ""
        self.error(node, keypath, f"expected {what}, got {type_name(node)}{hint}")
        return INVALID

    def get_int(self, node: Node, keypath: str) -> int:
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:int":
            return self.scalar(node)
        self.error(node, keypath, f"expected an integer, got {type_name(node)}")
        return INVALID

    def get_number(self, node: Node, keypath: str) -> float:
        if isinstance(node, ScalarNode) and node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
            return float(self.scalar(node))
        self.error(node, keypath, f"expected a number, got {type_name(node)}")
        return INVALID

    def get_bool(self, node: Node, keypath: str) -> bool:
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
            return bool(self.scalar(node))
        self.error(node, keypath, f"expected true or false, got {type_name(node)}")
        return INVALID

    def get_str_list(self, node: Node, keypath: str) -> list[tuple[str, Node, str]]:
        """A list of strings as (value, node, key path) triples; INVALID if not a list.
        Bad elements are reported and left out."""
        if not isinstance(node, SequenceNode):
            self.error(node, keypath, f"expected a list of strings, got {type_name(node)}")
            return INVALID
        out = []
        for i, item in enumerate(node.value):
            sub = f"{keypath}[{i}]"
            value = self.get_str(item, sub)
            if value is not INVALID:
                out.append((value, item, sub))
        return out


def unknown_key_message(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean '{close[0]}'?)"
    return f"unknown key (expected one of: {', '.join(allowed)})"


def one_line(text: str) -> str:
    return " ".join(str(text).split())
