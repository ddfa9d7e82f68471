"""Fixtures every test package may use: the exporter server, workload children, a cgroup.

Registered for the whole suite by ``tests/conftest.py`` (``pytest_plugins``), so that no test
imports another package's conftest to reach them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.exporter import Child, Exporter, start_child

CGROUP2 = Path("/sys/fs/cgroup/unified")


@pytest.fixture
def children():
    """``children(name, hot_mib=.., cold_mib=..)`` starts tests/service/child.py; all are
    killed at teardown."""
    started: list[Child] = []

    def start(name: str, **kw) -> Child:
        c = start_child(name, **kw)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def exporter(tmp_path):
    """``exporter(config_text, extra=[flags])`` starts the real exporter on a port of its own
    choosing (``e.port``); all are stopped at teardown."""
    started: list[Exporter] = []

    def start(config_text: str | None, extra: list[str] | None = None, **kw) -> Exporter:
        """``config_text`` None: no config file, the embedded default config."""
        cfg = None
        if config_text is not None:
            cfg = tmp_path / f"config{len(started)}.yaml"
            cfg.write_text(config_text)
        e = Exporter(cfg, 0, tmp_path / f"exporter{len(started)}.log", extra=list(extra or []), **kw)
        started.append(e)
        return e.start()

    yield start
    for e in started:
        e.stop()


@pytest.fixture
def cgroup2():
    """A fresh cgroup in the cgroup2 tree; processes moved there go back to the root
    before rmdir at teardown."""
    if not (CGROUP2 / "cgroup.procs").exists():
        pytest.skip("no cgroup2 hierarchy at /sys/fs/cgroup/unified")
    path = CGROUP2 / f"damon-test-{os.getpid()}"
    path.mkdir(exist_ok=True)
    yield path
    for pid in (path / "cgroup.procs").read_text().split():
        try:
            (CGROUP2 / "cgroup.procs").write_text(pid)
        except OSError:
            pass
    path.rmdir()
