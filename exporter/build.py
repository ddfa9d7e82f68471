"""Build facts for ``damon_exporter_build_info``, as Prometheus' version collector gives them
for Go exporters (version, revision, branch and the language runtime's version).

A Go binary has them linked in; a Python package does not, so they come from, in order:
``exporter/_build.json``, else the git checkout the package is imported from (read from
``.git`` directly, no ``git`` binary needed), else ``unknown``. ``_build.json`` is written
when the package is built: by the Dockerfile from its REVISION and BRANCH build arguments
(an image has no ``.git``), or by ``setup.py`` from the checkout being built
(:func:`stamp_build`), since ``pip install .`` copies the package away from its ``.git``.

:func:`version_text` is what ``--version`` prints, in the shape of Prometheus'
``version.Print`` (node_exporter's ``--version``), the Python version where Go's stands.
"""

from __future__ import annotations

import functools
import getpass
import json
import platform
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from exporter import __version__

UNKNOWN = "unknown"
_PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BuildInfo:
    version: str
    revision: str
    branch: str
    pythonversion: str
    #: who built it and when (``user@host``, ``YYYYMMDD-HH:MM:SS`` UTC, as promu stamps Go
    #: binaries): only a stamped build knows; not labels of the metric, as in node_exporter
    build_user: str = UNKNOWN
    build_date: str = UNKNOWN


def _git_dir(repo: Path) -> Path | None:
    """The git directory of ``repo``: ``.git`` itself, or where a worktree's ``.git`` file points."""
    dot_git = repo / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        text = dot_git.read_text().strip()
        if text.startswith("gitdir:"):
            path = Path(text[len("gitdir:"):].strip())
            return path if path.is_absolute() else (repo / path).resolve()
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    """A ref's commit, from the loose ref file or packed-refs (a worktree keeps both in the
    main repository's git directory, named by ``commondir``)."""
    dirs = [git_dir]
    common = git_dir / "commondir"
    if common.is_file():
        dirs.append((git_dir / common.read_text().strip()).resolve())
    for d in dirs:
        loose = d / ref
        if loose.is_file():
            return loose.read_text().strip()
    for d in dirs:
        packed = d / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    return None


def git_facts(repo: Path) -> tuple[str, str] | None:
    """(revision, branch) of the checkout at ``repo``; branch is ``HEAD`` when detached, as
    ``git rev-parse --abbrev-ref HEAD`` says. None when ``repo`` is not a checkout."""
    git_dir = _git_dir(repo)
    if git_dir is None or not (git_dir / "HEAD").is_file():
        return None
    head = (git_dir / "HEAD").read_text().strip()
    if head.startswith("ref:"):
        ref = head[len("ref:"):].strip()
        revision = _resolve_ref(git_dir, ref) or UNKNOWN
        return revision, ref.removeprefix("refs/heads/")
    return head, "HEAD"


@functools.cache
def build_info() -> BuildInfo:
    revision = branch = build_user = build_date = UNKNOWN
    stamped = _PACKAGE / STAMP
    if stamped.is_file():
        try:
            data = json.loads(stamped.read_text())
            revision = str(data.get("revision") or UNKNOWN)
            branch = str(data.get("branch") or UNKNOWN)
            build_user = str(data.get("build_user") or UNKNOWN)
            build_date = str(data.get("build_date") or UNKNOWN)
        except (OSError, ValueError, AttributeError):  # AttributeError: JSON but not an object
            pass
    else:
        try:
            facts = git_facts(_PACKAGE.parent)
        except OSError:
            facts = None
        if facts is not None:
            revision, branch = facts
    return BuildInfo(__version__, revision, branch, platform.python_version(), build_user, build_date)


STAMP = "_build.json"


def stamp_build(repo: Path, package_dir: Path) -> Path | None:
    """Write ``package_dir/_build.json`` with the revision and branch of the checkout at
    ``repo``, the build user and the build date (as promu stamps a Go binary). Nothing when
    the source is already stamped (the Dockerfile's build arguments win) or ``repo`` is no
    checkout. Returns the file written."""
    if (repo / "exporter" / STAMP).is_file():
        return None
    try:
        facts = git_facts(repo)
    except OSError:
        facts = None
    if facts is None:
        return None
    revision, branch = facts
    try:
        user = f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):  # getuser: no passwd entry and no LOGNAME/USER
        user = UNKNOWN
    out = package_dir / STAMP
    out.write_text(json.dumps({"revision": revision, "branch": branch, "build_user": user,
                               "build_date": time.strftime("%Y%m%d-%H:%M:%S", time.gmtime())}) + "\n")
    return out


#: ``uname -m`` -> Go's GOARCH, so ``platform:`` reads as node_exporter's does
_GOARCH = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "386",
    "i686": "386", "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
    "riscv64": "riscv64", "mips64": "mips64", "loongarch64": "loong64",
}


def go_platform() -> str:
    """``GOOS/GOARCH`` of this machine, e.g. ``linux/amd64``."""
    machine = platform.machine()
    return f"{sys.platform}/{_GOARCH.get(machine.lower(), machine.lower() or UNKNOWN)}"


def version_text(program: str = "damon-exporter") -> str:
    """What ``--version`` prints: Prometheus' ``version.Print`` layout, line for line."""
    info = build_info()
    return (
        f"{program}, version {info.version} (branch: {info.branch}, revision: {info.revision})\n"
        f"  build user:       {info.build_user}\n"
        f"  build date:       {info.build_date}\n"
        f"  python version:   {info.pythonversion}\n"
        f"  platform:         {go_platform()}\n"
        f"  tags:             unknown\n"
    )
