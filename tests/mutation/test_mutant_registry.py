"""The mutants still apply to today's source and name real tests; every accuracy test is a
killer of some mutant. Text checks only (no child pytest): these stay in the fast tier, so
a change to a mutated line shows in the developer's loop, not first in the slow run."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.mutation.mutants import ACCURACY_TESTS, MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]


def _function(nodeid: str) -> str:
    return re.sub(r"\[.*\]$", "", nodeid)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_applies_once_and_names_existing_tests(mutant: Mutant):
    spec = importlib.util.find_spec(mutant.module)
    source = Path(spec.origin).read_text()
    assert mutant.apply(source) != source
    assert mutant.killers, "a mutant no test kills is no check at all"
    for k in mutant.killers:
        path, _, func = _function(k).partition("::")
        assert (ROOT / path).is_file(), k
        assert re.search(rf"^def {re.escape(func)}\(", (ROOT / path).read_text(), re.M), k


def test_every_accuracy_test_kills_some_mutant():
    killers = {_function(k) for m in MUTANTS for k in m.killers}
    assert not [t for t in ACCURACY_TESTS if t not in killers]


def test_the_testing_doc_lists_every_mutant():
    doc = (ROOT / "docs/testing.md").read_text()
    assert [m.name for m in MUTANTS if f"`{m.name}`" not in doc] == []


def test_mutant_names_are_unique():
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
