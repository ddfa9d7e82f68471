"""User regexes (``match.cmdline``) compiled with RE2, the engine Prometheus and Go use.

Python's ``re`` backtracks: ``^(a+)+$`` against a 51-character command line, which any
local user can give a process, takes longer than the age of the universe and, holding
the GIL, freezes HTTP, health checks and signal handling with it. RE2 matches in time
linear in the input, bounds the memory of a compiled pattern, and is the syntax operators
already write in Prometheus relabelling rules. What RE2 cannot compile (backreferences,
lookahead and lookbehind, ``\\Z``, ...) is a config error naming file and line.
"""

from __future__ import annotations

from typing import Any

import re2

#: RE2's own default: a compiled program larger than this is refused ("pattern too large")
MAX_PROGRAM_BYTES = 8 << 20


class RegexError(ValueError):
    """A pattern RE2 refuses; the message is RE2's reason."""


def _options() -> Any:
    opts = re2.Options()
    opts.log_errors = False  # the error is ours to report, as a config line, not on stderr
    opts.max_mem = MAX_PROGRAM_BYTES
    return opts


def compile_regex(pattern: str) -> Any:
    """An RE2 pattern object with ``search``/``match``/``fullmatch``, or RegexError."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as e:
        reason = e.args[0] if e.args else str(e)
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        hint = " (RE2, as in Prometheus, has no backreferences, lookahead or lookbehind)" if reason.startswith(_UNSUPPORTED) else ""
        raise RegexError(f"RE2 cannot compile it: {reason}{hint}") from None


#: RE2's reasons for Perl syntax it does not implement, as opposed to plain typos
_UNSUPPORTED = ("invalid perl operator", "invalid escape sequence")
