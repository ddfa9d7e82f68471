"""Label values that come from the system are bounded, and stay distinct when cut.

A target's name and labels repeat in every series of the target. Where they come from the
system (a ``{{.Matches.x}}`` capture of a long argument, a cgroup path, an exe path), one
local process could make every scrape megabytes long: a 120 KB capture made a 4.6 MB
``/metrics`` for one process. So a value longer than :data:`MAX_LABEL_VALUE` characters is
cut, and the cut ends in ``~`` and 12 hex digits of the SHA-256 of the whole value: stable
from one discovery to the next (no series churn), and two long values that differ only past
the cut stay two series.
"""

from __future__ import annotations

import hashlib

#: the longest label value (and target name) the exporter emits, in characters
MAX_LABEL_VALUE = 128
_SUFFIX = 13  # "~" and 12 hex digits


def cap_value(value: str) -> str:
    """``value`` itself when short enough, else its head and a digest of the whole."""
    if len(value) <= MAX_LABEL_VALUE:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{value[: MAX_LABEL_VALUE - _SUFFIX]}~{digest}"
