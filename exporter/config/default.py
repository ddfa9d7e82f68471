"""The embedded default config: what the exporter watches when it is given no ``--config.file``.

A first run should show something on any machine without a file to write: the programs that
hold the most memory, one target each, named after the program (its comm), re-chosen at
every discovery (``keep_groups: largest``). It is written in the config language itself, so
it is validated like any file, ``damon-exporter check-config`` accepts a copy of it, and it
is a starting point for a real config (the landing page shows it). ``config.example.yaml``
stays the documented reference of every key.

What it costs: the monitoring defaults (500 ms samples, 10 s aggregations, 60 s updates)
and the default CPU budget (5% of a core) for ``DEFAULT_TOP_PROGRAMS`` targets. Reading every
process' command line at each discovery (the ``cmdline: ['']`` that matches every process)
costs about as much as the /proc scan itself.
"""

from __future__ import annotations

from dataclasses import replace

from exporter.config.model import Config
from exporter.config.parser import parse_config

#: how many programs the default config watches
DEFAULT_TOP_PROGRAMS = 10

#: where the default config's error lines (there are none: a test parses it) would point
DEFAULT_CONFIG_SOURCE = "<embedded default config>"

DEFAULT_CONFIG_YAML = f"""\
# damon-exporter's embedded default config, used when no --config.file is given:
# the {DEFAULT_TOP_PROGRAMS} programs with the most resident memory, one target each.
# Copy it to a file, edit it and pass --config.file FILE to choose what to watch;
# config.example.yaml documents every key.
targets:
  - name: "{{{{.Comm}}}}"          # one target per program name (the kernel's 15-character comm)
    match:
      cmdline: ['']            # matches every command line: every process (never the exporter itself)
    max_groups: {DEFAULT_TOP_PROGRAMS:<15}# watch this many programs ...
    keep_groups: largest       # ... those with the most resident memory, chosen again at every discovery
"""


def default_config() -> Config:
    """The embedded default, validated (``Config.path`` is None: it comes from no file)."""
    return replace(parse_config(DEFAULT_CONFIG_YAML, DEFAULT_CONFIG_SOURCE), path=None)
