"""Build hook: stamp the revision and branch of the checkout into the built package.

``pip install .`` copies ``exporter/`` into site-packages, away from the ``.git`` that
``exporter/build.py`` reads at run time, so ``--version`` would say ``unknown``. The build
step writes them into the built copy instead (``exporter/_build.json``); an editable install
runs from the checkout and keeps reading ``.git``. Everything else is in pyproject.toml.
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from exporter.build import stamp_build  # noqa: E402  (stdlib only: importable in any build environment)


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):
            stamp_build(ROOT, Path(self.build_lib) / "exporter")


setup(cmdclass={"build_py": BuildPy})
