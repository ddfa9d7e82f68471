"""Imports run one way: each package imports only packages below it (and model nothing).

The layers, bottom first. Data flows up the list (an engine's records are summarized, the
summary becomes metrics, metrics are served); code depends down it. Packages on one layer
are peers and do not import each other; neither do the three engines, which meet only in
the registry. Every import counts: at module level, inside functions, under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "exporter"

LAYERS: list[tuple[str, ...]] = [
    ("model", "build", "__init__"),
    ("procfs",),
    ("engines", "summary"),
    ("config",),
    ("discovery",),
    ("service",),
    ("metrics", "report"),
    ("web",),
    ("commands", "cli"),
    ("__main__",),
]
LAYER = {pkg: i for i, pkgs in enumerate(LAYERS) for pkg in pkgs}
ENGINES = ("page_idle", "damon_sysfs", "clear_refs")


def package_of(module: str) -> str:
    return module.split(".")[1]


def imports(path: Path) -> list[tuple[int, str]]:
    module = "exporter." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(line, n) for line, n in out if n == "exporter" or n.startswith("exporter.")]


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_package_has_a_layer():
    top = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert top == set(LAYER), f"packages without a layer: {top - set(LAYER)}; layers without a package: {set(LAYER) - top}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path):
    rel = path.relative_to(ROOT)
    own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    bad = []
    for line, name in imports(path):
        dep = package_of(name)
        if dep not in LAYER:  # a name of the root package itself (__version__)
            continue
        if dep == own:
            if own == "engines" and len(rel.parts) > 2:
                sub = name.split(".")[2] if name.count(".") >= 2 else ""
                if sub in ENGINES and sub != rel.parts[1]:
                    bad.append(f"{rel}:{line}: engine {rel.parts[1]} imports engine {sub}")
            continue
        if LAYER[dep] >= LAYER[own]:
            bad.append(f"{rel}:{line}: {own} (layer {LAYER[own]}) imports {name} (layer {LAYER[dep]})")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The rule can fail: an import up the layers is caught."""
    fake = ROOT / "model" / "_probe_for_test.py"
    fake.write_text("from exporter.web.server import WebApp\n")
    try:
        with pytest.raises(AssertionError, match="model .layer 0. imports exporter.web.server"):
            test_imports_point_down(fake)
    finally:
        fake.unlink()
