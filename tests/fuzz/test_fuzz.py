"""Every fuzz target for a moment in the suite: its corpus, then hypothesis' inputs (random
bytes and corpus inputs with bytes replaced or inserted), 150 per target (under a second
each). Longer runs: ``python3 -m tests.fuzz.run --seconds 600``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.run import corpus
from tests.fuzz.targets import TARGETS


def _edited(name: str) -> st.SearchStrategy[bytes]:
    """A corpus input with a piece replaced by hypothesis' bytes: close enough to the format
    to reach past its first check."""
    def edit(data: bytes, at: int, cut: int, piece: bytes) -> bytes:
        at %= len(data) + 1
        return data[:at] + piece + data[at + cut:]

    return st.builds(edit, st.sampled_from(corpus(name)), st.integers(0, 1 << 16), st.integers(0, 64), st.binary(max_size=64))


@pytest.mark.parametrize("name", list(TARGETS))
def test_the_corpus_parses(name):
    for data in corpus(name):
        TARGETS[name](data)


@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzz_briefly(name):
    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.one_of(st.binary(max_size=4096), _edited(name)))
    def run(data: bytes) -> None:
        TARGETS[name](data)

    run()


def test_the_fuzzer_finds_what_a_target_does_not_allow():
    """The loop can fail: a target that raises on a byte the corpus lacks is caught."""
    import random

    from tests.fuzz.run import fuzz

    def target(data: bytes) -> None:
        if b"\xe9" in data:
            raise ValueError("the \\xe9 of round 3")

    n, found = fuzz("auth_header", target, 0.2, random.Random(3), save=False)
    assert n > 10 and found and all(b"\xe9" in data for data, _ in found)
