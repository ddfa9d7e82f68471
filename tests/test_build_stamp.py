"""Build facts survive ``pip install .``: the build step stamps the checkout's revision and
branch into the built package (``setup.py``, ``exporter.build.stamp_build``), so
``--version`` and ``damon_exporter_build_info`` do not say ``unknown`` away from ``.git``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from exporter.build import git_facts, stamp_build

ROOT = Path(__file__).resolve().parents[1]


def _checkout(tmp_path: Path, branch: str, revision: str) -> Path:
    repo = tmp_path / "repo"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    (repo / "exporter").mkdir()
    (repo / ".git" / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    (repo / ".git" / "refs" / "heads" / branch).write_text(revision + "\n")
    return repo


def test_stamp_writes_the_checkout_revision_branch_user_and_date(tmp_path):
    repo = _checkout(tmp_path, "release-2", "ab" * 20)
    pkg = tmp_path / "built"
    pkg.mkdir()
    out = stamp_build(repo, pkg)
    assert out == pkg / "_build.json"
    data = json.loads(out.read_text())
    assert (data["revision"], data["branch"]) == ("ab" * 20, "release-2")
    assert re.fullmatch(r"[^@\s]+@[^@\s]+", data["build_user"]), data
    assert re.fullmatch(r"\d{8}-\d\d:\d\d:\d\d", data["build_date"]), data


def test_a_stamped_source_or_no_checkout_writes_nothing(tmp_path):
    repo = _checkout(tmp_path, "main", "cd" * 20)
    (repo / "exporter" / "_build.json").write_text('{"revision": "from-the-dockerfile"}')
    pkg = tmp_path / "built"
    pkg.mkdir()
    assert stamp_build(repo, pkg) is None and not (pkg / "_build.json").exists()
    bare = tmp_path / "bare"
    bare.mkdir()
    assert stamp_build(bare, pkg) is None and not (pkg / "_build.json").exists()


def test_the_built_package_prints_the_checkout_revision(tmp_path):
    """setuptools' build_py (what ``pip install .`` runs) stamps the copy it builds; that copy,
    imported away from the checkout, prints the checkout's revision and branch."""
    facts = git_facts(ROOT)
    if facts is None:
        import pytest

        pytest.skip("not a git checkout: nothing to stamp")
    built = tmp_path / "lib"
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(built)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    version = subprocess.run([sys.executable, "-c", "from exporter.build import version_text; print(version_text())"],
                             cwd=tmp_path, env={"PYTHONPATH": str(built), "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    revision, branch = facts
    assert f"(branch: {branch}, revision: {revision})" in version.stdout, version.stdout
    assert "build user:       unknown" not in version.stdout
