"""Run pytest on a selection of tests with one mutant applied, and read back each test's outcome.

``python3 -m tests.mutation.matrix [MUTANT...]`` runs every mutant (or those named) against
every accuracy test on the host (:data:`ACCURACY`, without the ``slow`` ones) and prints,
per mutant, the tests its bug makes fail; then the accuracy tests no mutant made fail. It
takes about 15 s a mutant (one pytest process at a time); it is how the table in
docs/testing.md was made, and the way to choose ``killers`` for a new mutant.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from tests.mutation.mutants import MUTANT_ENV, MUTANTS

ROOT = Path(__file__).resolve().parents[2]

#: the accuracy tests that run on the host: the engines and the summary against a known truth
#: (simulated memory, a fake kernel tree, hand-made records, this kernel's own pagemap)
ACCURACY = (
    "tests/core/test_monitor_accuracy.py",
    "tests/core/test_monitor_invariants.py",
    "tests/core/test_regions_properties.py",
    "tests/summary/test_stat.py",
    "tests/summary/test_sharing.py",
    "tests/summary/test_promotion.py",
    "tests/ops/test_page_idle.py",
    "tests/ops/test_procfs.py",
    "tests/engines/test_clear_refs_curves.py",
    "tests/service/test_budget_truth.py",
)


@dataclass(frozen=True)
class Outcome:
    """One test's result: ``passed``, ``failed`` (``assertion`` says whether by an assert),
    ``error`` or ``skipped``."""

    result: str
    message: str = ""
    assertion: bool = False


@dataclass(frozen=True)
class Run:
    returncode: int
    outcomes: dict[str, Outcome]
    output: str

    @property
    def applied(self) -> bool:
        return any(line.startswith("mutant: ") and " applied to " in line for line in self.output.splitlines())

    def failed(self) -> list[str]:
        return [n for n, o in self.outcomes.items() if o.result == "failed"]


def _nodeid(case: ET.Element) -> str:
    # pytest's junit classname is the module's dotted path (plus the class, if any)
    parts = case.get("classname", "").split(".")
    for i in range(len(parts), 0, -1):
        path = "/".join(parts[:i]) + ".py"
        if (ROOT / path).is_file():
            return "::".join([path, *parts[i:], case.get("name", "")])
    return f"{case.get('classname')}::{case.get('name')}"


def _is_assertion(message: str, text: str) -> bool:
    m = message.lstrip()
    if m.startswith(("assert ", "AssertionError")):
        return True
    # hypothesis reports the falsifying example first; the assert is in the traceback's last E lines
    e_lines = [ln for ln in text.splitlines() if ln.startswith("E ")]
    return bool(e_lines) and any(ln[1:].lstrip().startswith(("assert ", "AssertionError")) for ln in e_lines[-40:])


def run(mutant: str | None, selection: list[str] | tuple[str, ...], *, markers: str = "not vm and not slow",
        stop_first: bool = False, timeout: float = 300.0) -> Run:
    """pytest on ``selection`` (paths or node ids) in a child process, at the lowest CPU
    priority, with ``mutant`` applied (None: none)."""
    env = dict(os.environ)
    env[MUTANT_ENV] = mutant or ""
    env.pop("PYTEST_ADDOPTS", None)
    # only hypothesis' plugin: the others installed (cloudcoil, benchmark, anyio) cost ~2 s
    # of imports per child and no accuracy test uses them (the unmutated run would fail if
    # one did)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = ["nice", "-n", "19", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-p", "_hypothesis_pytestplugin", "-p", "tests.mutation.plugin", "-m", markers, f"--junitxml={xml}", "-o", "junit_family=xunit1"]
        if stop_first:
            cmd.append("-x")
        p = subprocess.run(cmd + list(selection), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        outcomes: dict[str, Outcome] = {}
        if xml.exists():
            for case in ET.parse(xml).getroot().iter("testcase"):
                node = _nodeid(case)
                f = case.find("failure")
                e = case.find("error")
                if f is not None:
                    msg = f.get("message", "")
                    outcomes[node] = Outcome("failed", msg, _is_assertion(msg, f.text or ""))
                elif e is not None:
                    outcomes[node] = Outcome("error", e.get("message", ""))
                elif case.find("skipped") is not None:
                    outcomes[node] = Outcome("skipped", case.find("skipped").get("message", ""))
                else:
                    outcomes[node] = Outcome("passed")
    return Run(p.returncode, outcomes, p.stdout + p.stderr)


def main(argv: list[str]) -> int:
    names = argv or [m.name for m in MUTANTS]
    base = run(None, ACCURACY)
    if base.returncode != 0:
        print(base.output)
        print("the accuracy tests fail without a mutant: no kill would mean anything")
        return 1
    killed_any: set[str] = set()
    for name in names:
        r = run(name, ACCURACY)
        if not r.applied:
            print(f"{name}: NOT APPLIED (rc {r.returncode})\n{r.output[-2000:]}")
            continue
        kills = sorted(n for n, o in r.outcomes.items() if o.result in ("failed", "error"))
        killed_any.update(n for n in kills if r.outcomes[n].result == "failed")
        print(f"{name}: {len(kills)} of {len(r.outcomes)} fail")
        for n in kills:
            o = r.outcomes[n]
            kind = "assert" if o.assertion else o.result + ": " + o.message.splitlines()[0][:100] if o.message else o.result
            print(f"    {n}  [{kind}]")
        sys.stdout.flush()
    if not argv:
        survivors = sorted(n for n, o in base.outcomes.items() if o.result == "passed" and n not in killed_any)
        print(f"\naccuracy tests no mutant made fail ({len(survivors)}):")
        for n in survivors:
            print(f"    {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
