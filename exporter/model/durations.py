"""Prometheus-style durations ("500ms", "10s", "1m30s", "2h").

Users type these in flags and in the YAML config, the same syntax as Prometheus' own
``scrape_interval``, so nobody has to remember whether a number means ms or s.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+")


class DurationError(ValueError):
    """A duration string that is not Prometheus syntax."""


def parse_duration(text: str) -> float:
    """Return the duration in seconds; raise DurationError with the reason otherwise."""
    if not isinstance(text, str):
        raise DurationError(f"expected a duration like 500ms, 10s or 2m, got {text!r}")
    s = text.strip()
    if not s or not _WHOLE.fullmatch(s):
        raise DurationError(f"not a duration: {text!r} (use a number and a unit: ms, s, m, h, d, w, y; e.g. 500ms, 10s, 1m30s)")
    total = 0.0
    for number, unit in _PART.findall(s):
        total += int(number) * _UNITS[unit]
    if total <= 0:
        raise DurationError(f"duration must be greater than zero: {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """The shortest Prometheus spelling of ``seconds`` (rounded to milliseconds)."""
    ms = int(round(seconds * 1000))
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)
