"""Every mutant is killed: each of its ``killers`` fails, by an assertion, with the bug in.

Each mutant's killers run in a child pytest (``-p tests.mutation.plugin``, the mutant named
in the environment); the same tests run once without a mutant first and must all pass, so
a broken harness (a test that fails anyway, a mutant that does not apply, a node id that
names nothing) cannot pass for a kill. See docs/testing.md, "Mutation check".
"""

from __future__ import annotations

import pytest

from tests.mutation.matrix import Run, run
from tests.mutation.mutants import MUTANTS, Mutant

pytestmark = pytest.mark.slow  # a child pytest per mutant: over a minute in all

ALL_KILLERS = sorted({k for m in MUTANTS for k in m.killers})


@pytest.fixture(scope="module")
def unmutated() -> Run:
    return run(None, ALL_KILLERS)


def test_the_killers_pass_without_a_mutant(unmutated):
    assert "mutant: none" in unmutated.output
    not_passed = {k: unmutated.outcomes[k].result if k in unmutated.outcomes else "not run" for k in ALL_KILLERS
                  if unmutated.outcomes.get(k) is None or unmutated.outcomes[k].result != "passed"}
    assert not not_passed, f"{not_passed}\n{unmutated.output[-3000:]}"
    assert unmutated.returncode == 0, unmutated.output[-3000:]


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_is_killed(mutant: Mutant, unmutated):
    if any(unmutated.outcomes.get(k) is None or unmutated.outcomes[k].result != "passed" for k in mutant.killers):
        pytest.fail("some of its killers do not pass without a mutant: see test_the_killers_pass_without_a_mutant")
    r = run(mutant.name, mutant.killers)
    assert r.applied, r.output[-3000:]
    assert r.returncode == 1, f"pytest exit status {r.returncode}, not 1 (tests failed)\n{r.output[-3000:]}"
    survivors = [k for k in mutant.killers if k not in r.outcomes or r.outcomes[k].result != "failed"]
    assert not survivors, f"{mutant.name} ({mutant.bug}) is not killed by {survivors}"
    not_asserts = {k: r.outcomes[k].message.splitlines()[0] for k in mutant.killers if not r.outcomes[k].assertion}
    assert not not_asserts, f"{mutant.name} made these fail by an exception, not an assertion: {not_asserts}"
