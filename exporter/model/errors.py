"""The error vocabulary every layer raises and counts.

Each kind of ``damon_sampler_errors_total{kind}`` is declared once, in :data:`ERROR_KINDS`,
with what it means; the metric's HELP text, the kinds exported at 0 from the start and the
README's table all come from there (a test holds the README to it). An exception class
names its kind in ``kind``; kinds that are counted without an exception (``discovery``,
``internal``) are only in the table. Accessed bits that someone else cleared are a condition
of the node, not an error: ``damon_target_accessed_bits_reset_total`` counts them.
"""

from __future__ import annotations

from typing import ClassVar

#: every counted error kind and what it means; the order is the order of the HELP text
ERROR_KINDS: dict[str, str] = {
    "permission": "a privilege the backend needs for a process is missing (the process is not monitored)",
    "io": "a kernel file could not be read or written",
    "backend_unavailable": "the backend's kernel interface is missing or refused",
    "limit": "a process was left out because a configured bound was reached",
    "damon_sysfs": "the kernel's DAMON sysfs tree failed, or someone else changed the kdamond the exporter owns",
    "exec": "a monitored process exec'ed another program: dropped before anything was written to it or published from it, matched again at the next discovery",
    "discovery": "target discovery failed (the previous targets are kept)",
    "internal": "an unexpected error in the sampler (a bug: please report it)",
}


class OpsError(Exception):
    """Base of the errors engines and /proc readers raise; the message is for people."""

    #: short label for ``damon_sampler_errors_total{kind}`` (a key of :data:`ERROR_KINDS`)
    kind: ClassVar[str] = "io"


class ProcessGone(OpsError):
    """The process exited or exec'ed (its address space is not the one we monitored).

    Never counted: processes exit all the time, and that is not a problem of the exporter."""

    kind = "process_gone"


class ImageChanged(ProcessGone):
    """The process exec'ed since it was matched: same pid and start time, another program.

    Counted (kind ``exec``) and logged, unlike an exit: a process that exec'ed between its
    discovery and a write is how a local user would try to make the exporter act on a
    program no target names."""

    kind = "exec"


class AccessDenied(OpsError):
    """We lack a privilege the backend needs for this process (message says which)."""

    kind = "permission"


class BackendUnavailable(OpsError):
    """The kernel interface the backend needs is missing on this machine."""

    kind = "backend_unavailable"


class LimitReached(OpsError):
    """A configured bound leaves this process out (the message names the bound)."""

    kind = "limit"
