"""Every place that lists backend names takes them from the one registry."""

from __future__ import annotations

import json
from pathlib import Path

from exporter.commands.snapshot import build_parser
from exporter.config import BACKENDS
from exporter.engines.registry import BACKEND_NAMES, REGISTRY

REPO = Path(__file__).resolve().parents[2]


def test_registry_order_is_autos_preference_and_auto_comes_first():
    assert BACKEND_NAMES[0] == "auto"
    assert BACKEND_NAMES[1:] == tuple(REGISTRY)


def test_helm_values_schema_enum_is_the_registry():
    schema = json.loads((REPO / "helm/damon-exporter/values.schema.json").read_text())
    assert tuple(schema["properties"]["backend"]["enum"]) == BACKEND_NAMES


def test_config_and_cli_take_the_registry():
    assert BACKENDS == BACKEND_NAMES
    backend = next(a for a in build_parser()._actions if a.dest == "backend")
    assert tuple(backend.choices) == BACKEND_NAMES
