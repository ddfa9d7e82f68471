"""``damon-exporter check-config FILE``: validate a config without starting anything.

Meant for CI and config-management hooks: exit 0 and one summary line when the file is
good, exit 2 and every problem (``FILE:LINE: key.path: message``) on stderr when not.
"""

from __future__ import annotations

import sys

from exporter.config import ConfigError, load_config

USAGE = "usage: damon-exporter check-config FILE"


def main(argv: list[str]) -> int:
    if len(argv) == 1 and argv[0] in ("-h", "--help"):
        print(USAGE)
        print("Validate a damon-exporter YAML config; exit 0 if valid, 2 if not.")
        return 0
    if len(argv) != 1 or (argv[0].startswith("-") and argv[0] != "-"):
        print(USAGE, file=sys.stderr)
        return 2
    path = argv[0] if argv[0] != "-" else "/dev/stdin"
    try:
        config = load_config(path)
    except ConfigError as e:
        for line in e.lines:
            print(line, file=sys.stderr)
        return 2
    n = len(config.targets)
    print(f"{argv[0]}: OK ({n} target{'s' if n != 1 else ''}, backend {config.backend})")
    return 0
