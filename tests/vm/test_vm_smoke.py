"""The harness itself, on a real boot: the guest runs our kernel as root, has idle page
tracking and kernel DAMON, sees the repo and this Python, and its exit code comes back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from . import harness

pytestmark = [pytest.mark.vm, pytest.mark.slow]

GUEST_SCRIPT = r"""
{py} - <<'EOF'
import json, os, platform, sys
import exporter
facts = {{
    "release": platform.release(),
    "uid": os.getuid(),
    "page_idle_bitmap": os.path.exists("/sys/kernel/mm/page_idle/bitmap"),
    "damon_sysfs": os.path.isdir("/sys/kernel/mm/damon/admin/kdamonds"),
    "python": sys.executable,
    "exporter": os.path.dirname(exporter.__file__),
    "thp": open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip(),
}}
with open({out!r}, "w") as f:
    json.dump(facts, f)
print("facts written")
EOF
echo "@@VM-EXIT 99@@ (a marker in the command's own output must not win)"
exit 3
"""


@pytest.fixture(scope="module")
def smoke(vm_kernel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[harness.GuestRun, dict]:
    shared = tmp_path_factory.mktemp("vm-smoke")
    out = shared / "facts.json"
    run = harness.run_in_guest(
        GUEST_SCRIPT.format(py=sys.executable, out=str(out)), kernel=vm_kernel, timeout=300, shared_dir=shared
    )
    facts = json.loads(out.read_text()) if out.exists() else {}
    return run, facts


def test_guest_reports_its_exit_code(smoke: tuple[harness.GuestRun, dict]) -> None:
    run, _ = smoke
    assert not run.timed_out, run.describe()
    assert run.exit_code == 3, run.describe()
    assert "facts written" in run.output


def test_guest_runs_the_test_kernel_as_root(smoke: tuple[harness.GuestRun, dict], vm_kernel: Path) -> None:
    run, facts = smoke
    assert facts, run.describe()
    assert facts["release"] == harness.kernel_release(vm_kernel)
    assert facts["uid"] == 0


def test_guest_has_page_idle_and_damon(smoke: tuple[harness.GuestRun, dict]) -> None:
    run, facts = smoke
    assert facts.get("page_idle_bitmap") is True, run.describe()
    assert facts["damon_sysfs"] is True


def test_guest_uses_this_python_and_repo(smoke: tuple[harness.GuestRun, dict]) -> None:
    run, facts = smoke
    assert facts["python"] == sys.executable
    assert Path(facts["exporter"]) == harness.REPO_ROOT / "exporter"

