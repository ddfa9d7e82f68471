"""Entry point of the ``damon-exporter`` command.

``damon-exporter snapshot ...``      monitor for a while and print (exporter.commands.snapshot)
``damon-exporter check-config FILE`` validate a config file (exporter.commands.check_config)
``damon-exporter [--config FILE] ...`` run the Prometheus exporter (exporter.commands.serve)
"""

from __future__ import annotations

import sys
from importlib import import_module

SUBCOMMANDS = {
    "snapshot": "exporter.commands.snapshot",
    "check-config": "exporter.commands.check_config",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        module = import_module(SUBCOMMANDS[args[0]])
        return int(module.main(args[1:]) or 0)
    module = import_module("exporter.commands.serve")
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
