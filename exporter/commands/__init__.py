"""Subcommands of the ``damon-exporter`` command line, one module each."""
