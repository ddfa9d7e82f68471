"""The exporter's YAML config: what to monitor, how, and how to label it.

``load_config(path)`` / ``parse_config(text)`` return a validated, frozen :class:`Config`
or raise :class:`ConfigError` whose ``lines`` list every problem as
``FILE:LINE: key.path: message``.
"""

from exporter.config.model import (
    BACKENDS,
    DEFAULT_CPU_BUDGET,
    DEFAULT_MAX_GROUPS,
    GROUP_BY_KEYS,
    KEEP_GROUPS,
    RESERVED_LABELS,
    Config,
    ConfigError,
    TargetConfig,
)
from exporter.config.parser import load_config, parse_config

__all__ = [
    "BACKENDS",
    "DEFAULT_CPU_BUDGET",
    "DEFAULT_MAX_GROUPS",
    "GROUP_BY_KEYS",
    "KEEP_GROUPS",
    "RESERVED_LABELS",
    "Config",
    "ConfigError",
    "TargetConfig",
    "load_config",
    "parse_config",
]
