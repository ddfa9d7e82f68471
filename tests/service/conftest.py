from __future__ import annotations

import os
from pathlib import Path

import pytest

from .harness import Child, Exporter, free_port, start_child

CGROUP2 = Path("/sys/fs/cgroup/unified")


@pytest.fixture
def children():
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
    started: list[Exporter] = []

    def start(config_text: str | None, extra: list[str] | None = None, **kw) -> Exporter:
        """``config_text`` None: no config file, the embedded default config."""
        cfg = None
        if config_text is not None:
            cfg = tmp_path / f"config{len(started)}.yaml"
            cfg.write_text(config_text)
        e = Exporter(cfg, free_port(), tmp_path / f"exporter{len(started)}.log", extra=list(extra or []), **kw)
        started.append(e.start())
        return e

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
