"""The shipped config.example.yaml is valid and means what its comments say."""

from __future__ import annotations

from pathlib import Path

from exporter.config import load_config
from exporter.config.model import KubeConfig
from exporter.model.attrs import MonitoringAttrs

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


def test_example_parses_to_documented_values():
    c = load_config(str(EXAMPLE))
    assert c.path == str(EXAMPLE)
    assert c.backend == "auto"
    assert c.monitoring == MonitoringAttrs(0.1, 2.0, 10.0, 10, 200)
    assert (c.cold_age, c.working_set_window, c.cpu_budget) == (120.0, 60.0, 0.05)
    assert c.remove_empty_groups is False
    assert c.kubernetes == KubeConfig(metadata="auto", timeout=5.0, max_response_size=4 << 20, pod_labels=("app.kubernetes.io/name",))
    web, batch, programs, pods = c.targets
    assert programs.name == "{{.Comm}}" and programs.name_template is not None
    assert programs.comm == ("postgres", "redis-server")
    assert (web.name, web.comm, web.exe, [p.pattern for p in web.cmdline]) == (
        "web",
        ("nginx",),
        ("/usr/sbin/nginx",),
        ["--port=80"],
    )
    assert web.include_children and web.cgroup is None and web.labels == (("team", "edge"),)
    assert (batch.name, batch.cgroup, batch.comm, batch.include_children) == ("batch", "batch.slice/**", (), False)
    assert (pods.cgroup, pods.group_by, pods.max_groups, pods.keep_groups) == (
        "kubepods.slice",
        ("pod_uid", "container_id", "qos_class"),
        100,
        "stable",
    )


def test_every_key_of_the_example_is_commented():
    """Each key line of the example carries a comment (on it or just above it)."""
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        key = stripped.lstrip("- ").split(":", 1)[0]
        if key in ("monitoring", "targets", "match"):
            continue  # section headers: their children are documented
        above = lines[i - 1].strip() if i else ""
        assert "#" in line or above.startswith("#"), f"line {i + 1} ({key}) has no comment"
