"""Logging in node_exporter's two formats: logfmt (``ts=... level=info msg="..."``) and JSON.

One line per event, key=value pairs from ``extra={"kv": {...}}`` appended, so an SRE can
grep or ship the lines without a multi-line parser. Tracebacks are never printed at info
level: a problem is one clear line; ``--log.level debug`` adds the exception text.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error", logging.CRITICAL: "error"}


def _ts(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"ts": _ts(record), "level": _NAMES.get(record.levelno, "info")}
    out["caller"] = record.name
    out["msg"] = record.getMessage()
    kv = getattr(record, "kv", None)
    if isinstance(kv, dict):
        out.update(kv)
    if record.exc_info and record.exc_info[1] is not None:
        out["err"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return out


def _logfmt_value(v: Any) -> str:
    s = str(v)
    if s == "" or any(c in s for c in ' ="\\\n\t'):
        s = '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    return s


class LogfmtFormatter(logging.Formatter):
    """``ts=2024-01-01T00:00:00.000Z level=info caller=... msg="..." key=value``"""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line, same keys as logfmt."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def setup_logging(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Configure the root logger once; replaces handlers so tests can call it repeatedly."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (want one of {', '.join(LEVELS)})")
    if fmt not in ("logfmt", "json"):
        raise ValueError(f"unknown log format {fmt!r} (want logfmt or json)")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter() if fmt == "logfmt" else JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
