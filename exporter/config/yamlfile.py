"""Reading a YAML config file safely: one reader for the main config and the web config.

Both files come from operators, but a config is also something a ConfigMap, a Helm value or
a careless script can fill with anything. Three things would otherwise hurt the process:

* size: a multi-megabyte file (say a 10 MB ``cmdline`` regex) costs gigabytes of memory to
  compose and compile. Files above :data:`MAX_CONFIG_BYTES` are refused before parsing,
  and only that many bytes (plus one) are ever read.
* nesting: PyYAML's composer recurses once per level, so a 1 KB file nested 500 deep
  raises ``RecursionError`` (not a ``YAMLError``), which would kill the reload thread.
  The composer here stops at :data:`MAX_DEPTH` levels with a positioned error instead.
* encoding: a file that is not UTF-8 is one clear line, never a traceback.

Every problem is a :class:`YAMLFileError` whose ``lines`` read ``FILE:LINE: message`` (just
``FILE: cannot read: reason`` when there is no line to point at).
"""

from __future__ import annotations

import os
import stat

import yaml
from yaml.nodes import Node

#: largest config file accepted (main and web config). The shipped example is under 3 KiB;
#: a config with hundreds of targets stays far below this.
MAX_CONFIG_BYTES = 1 << 20
#: deepest nesting of mappings and lists accepted; real configs use about five levels
MAX_DEPTH = 64


class YAMLFileError(Exception):
    """A file that cannot be composed; ``lines`` are ``FILE:LINE: message``."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


class _DepthLimitedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses documents nested deeper than MAX_DEPTH."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class NotRegularFile(OSError):
    """A FIFO, device or socket where a config file should be."""


def read_regular(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``, which must be a regular file. The open does not
    block and anything else is refused: a FIFO put in a config's place would block its
    reader forever (the reload thread, or the web server's event loop)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(f"{path} is not a regular file")
        chunks, left = [], limit
        while left > 0:
            b = os.read(fd, min(left, 1 << 20))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str) -> str:
    """The file's text; YAMLFileError when unreadable, too large or not UTF-8."""
    try:
        data = read_regular(path, MAX_CONFIG_BYTES + 1)
    except NotRegularFile:
        raise YAMLFileError([f"{path}: not a regular file; refusing to read it"]) from None
    except OSError as e:
        raise YAMLFileError([f"{path}: cannot read: {e.strerror or e}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise YAMLFileError([f"{path}:1: file larger than {MAX_CONFIG_BYTES} bytes ({MAX_CONFIG_BYTES >> 20} MiB); refusing to parse it"])
    return decode(data, path)


def decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise YAMLFileError([f"{path}:{line}: not UTF-8 text (byte {e.start})"]) from None


def compose(text: str, path: str) -> Node | None:
    """The node tree of ``text`` (None for an empty document), or YAMLFileError."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise YAMLFileError([f"{path}:1: file larger than {MAX_CONFIG_BYTES} bytes ({MAX_CONFIG_BYTES >> 20} MiB); refusing to parse it"])
    try:
        return yaml.compose(text, Loader=_DepthLimitedLoader)
    except yaml.MarkedYAMLError as e:
        raise YAMLFileError([syntax_error(path, e)]) from None
    except yaml.YAMLError as e:  # not positioned (e.g. bad stream encoding)
        raise YAMLFileError([f"{path}:1: YAML error: {one_line(str(e))}"]) from None
    except RecursionError:  # belt and braces: the depth limit should make this unreachable
        raise YAMLFileError([f"{path}:1: YAML nested too deeply"]) from None


def syntax_error(path: str, e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    where = f"{path}:{mark.line + 1}" if mark else f"{path}:1"
    problem = one_line(e.problem or "")
    context = one_line(e.context or "")
    if context and e.context_mark is not None and e.context_mark is not mark:
        context += f" at line {e.context_mark.line + 1}"
    detail = f"{problem} ({context})" if problem and context else (problem or context or "invalid YAML")
    return f"{where}: YAML syntax error: {detail}"


def one_line(text: str) -> str:
    return " ".join(str(text).split())
