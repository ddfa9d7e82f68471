"""Fixtures for the backend tests: the host test child, built with gcc at test time."""

from __future__ import annotations

import pytest

from tests.support.workloads import build_workload


@pytest.fixture(scope="session")
def toucher(tmp_path_factory) -> str:
    """Path of the compiled ``tests/workloads/mappings.c``."""
    return build_workload("mappings.c", tmp_path_factory.mktemp("children"), "toucher")
