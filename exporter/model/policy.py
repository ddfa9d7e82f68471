"""What the user calls cold and working set: the two horizons every layer agrees on.

The summary applies them; the config parses them; the clear_refs engine needs them to know
*when* to read (not what the reading means). Declared here so none of those imports another.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_COLD_AGE = 120.0
DEFAULT_WORKING_SET_WINDOW = 60.0


@dataclass(frozen=True)
class Policy:
    """What the user calls cold and working set (config ``cold_age``, ``working_set_window``)."""

    cold_age: float = DEFAULT_COLD_AGE
    working_set_window: float = DEFAULT_WORKING_SET_WINDOW
