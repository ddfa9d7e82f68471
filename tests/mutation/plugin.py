"""pytest plugin: import one module of the exporter with a mutant's bug in it.

Loaded with ``-p tests.mutation.plugin`` (before any conftest, so before anything imports
the exporter's engines); ``DAMON_EXPORTER_MUTANT=<name>`` names the mutant
(:mod:`tests.mutation.mutants`), unset or empty runs the code as it is. The module is
compiled from its patched source in memory: no file, and no bytecode cache, is changed.

The run ends with a line ``mutant: <name> applied to <module>`` (or ``mutant: none``), and
with exit status 4 (usage error, never 1) when a named mutant was not applied, so a mutant
that no longer applies cannot look killed. Hypothesis runs derandomized, without its example
database and without shrinking: a kill is then the same on every run, and a failing property
test fails at once rather than minimizing its example.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

import pytest

from tests.mutation.mutants import BY_NAME, MUTANT_ENV, Mutant

_name = os.environ.get(MUTANT_ENV, "")
_mutant: Mutant | None = BY_NAME.get(_name) if _name else None
if _name and _mutant is None:
    raise pytest.UsageError(f"{MUTANT_ENV}={_name}: no such mutant (tests/mutation/mutants.py)")
_applied: list[str] = []


class _MutatedLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname):  # never the cached bytecode of the unmutated source
        source = self.get_source(fullname)
        return compile(_mutant.apply(source), self.path, "exec", dont_inherit=True)

    def exec_module(self, module):
        super().exec_module(module)
        _applied.append(module.__name__)


class _MutatingFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if _mutant is None or fullname != _mutant.module:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.origin is None:
            return None
        loader = _MutatedLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


if _mutant is not None:
    if _mutant.module in sys.modules:
        raise pytest.UsageError(f"mutant {_mutant.name}: {_mutant.module} was imported before the plugin loaded")
    sys.meta_path.insert(0, _MutatingFinder())


def pytest_configure(config):
    try:
        from hypothesis import Phase, settings
    except ImportError:
        return
    settings.register_profile("mutation", database=None, derandomize=True,
                              phases=[Phase.explicit, Phase.reuse, Phase.generate])
    settings.load_profile("mutation")


def pytest_sessionfinish(session, exitstatus):
    if _mutant is not None and not _applied:
        session.exitstatus = pytest.ExitCode.USAGE_ERROR


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _mutant is None:
        terminalreporter.write_line("mutant: none")
    elif _applied:
        terminalreporter.write_line(f"mutant: {_mutant.name} applied to {_mutant.module}")
    else:
        terminalreporter.write_line(f"mutant: {_mutant.name} NOT applied: {_mutant.module} was never imported")
