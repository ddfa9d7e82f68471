"""``damon-exporter check-config FILE``: validate a config without starting anything.

Meant for CI and config-management hooks: exit 0 and one summary line when the file is
good, exit 2 and every problem (``FILE:LINE: key.path: message``) on stderr when not.
"""

from __future__ import annotations

import sys

from exporter.config import ConfigError, load_config, parse_config
from exporter.config.yamlfile import MAX_CONFIG_BYTES, YAMLFileError, decode


def stdin_text(name: str) -> str:
    """The config on standard input, bounded as a file is."""
    data = sys.stdin.buffer.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{name}:1: file larger than {MAX_CONFIG_BYTES} bytes ({MAX_CONFIG_BYTES >> 20} MiB); refusing to parse it"])
    try:
        return decode(data, name)
    except YAMLFileError as e:
        raise ConfigError(e.lines) from None

USAGE = "usage: damon-exporter check-config FILE"


def main(argv: list[str]) -> int:
    if len(argv) == 1 and argv[0] in ("-h", "--help"):
        print(USAGE)
        print("Validate a damon-exporter YAML config; exit 0 if valid, 2 if not.")
        return 0
    if len(argv) != 1 or (argv[0].startswith("-") and argv[0] != "-"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        if argv[0] == "-":  # a pipe, deliberately: read it here (the file reader takes regular files only)
            config = parse_config(stdin_text("/dev/stdin"), "/dev/stdin")
        else:
            config = load_config(argv[0])
    except ConfigError as e:
        for line in e.lines:
            print(line, file=sys.stderr)
        return 2
    n = len(config.targets)
    print(f"{argv[0]}: OK ({n} target{'s' if n != 1 else ''}, backend {config.backend})")
    return 0
