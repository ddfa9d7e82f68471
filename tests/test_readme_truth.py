"""The install facts in docs/testing.md match what .ci/run does (the CI script is the truth)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTING = ROOT / "docs" / "testing.md"


def _ci_apt_packages() -> list[str]:
    text = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if "apt-get install" in x]
    words = line.split("apt-get install", 1)[1].split(">", 1)[0].split()
    return [w for w in words if not w.startswith("-")]


def test_the_apt_list_is_what_ci_installs():
    doc = TESTING.read_text()
    m = re.search(r"^apt `([^`]+)`;", doc, re.M)
    assert m, "docs/testing.md: no 'apt `...`;' line under the test command"
    assert m.group(1).split() == _ci_apt_packages()


def test_the_pip_list_is_the_test_extra():
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    names = {re.split(r"[<>=!~\[ ]", req, 1)[0] for req in extra}
    doc = " ".join(TESTING.read_text().split())
    m = re.search(r"pip the project with its `test` extra \(([^)]*)\)", doc)
    assert m, "docs/testing.md: no 'pip the project with its `test` extra (...)'"
    assert set(m.group(1).replace(",", " ").split()) == names
