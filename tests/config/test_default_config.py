"""The embedded default config (no --config.file) is a valid config that means what it says,
and a copy of it is a file the exporter accepts as a starting point."""

from __future__ import annotations

from exporter.commands import check_config
from exporter.config import load_config
from exporter.config.default import DEFAULT_CONFIG_YAML, DEFAULT_TOP_PROGRAMS, default_config
from exporter.config.model import Config


def test_default_watches_the_largest_programs_one_target_each():
    c = default_config()
    assert c.path is None
    (t,) = c.targets
    assert t.name == "{{.Comm}}" and t.name_template is not None and t.name_template.needs == {"comm"}
    assert (t.max_groups, t.keep_groups, t.group_by, t.include_children) == (DEFAULT_TOP_PROGRAMS, "largest", (), False)
    assert DEFAULT_TOP_PROGRAMS == 10
    # cmdline '' matches every command line, the empty one too: every process
    (rx,) = t.cmdline
    assert rx.search("") and rx.search("/usr/sbin/nginx -g daemon off;")
    assert (t.comm, t.exe, t.cgroup) == ((), (), None)
    # everything else is the defaults a file without those keys gets
    defaults = Config(targets=c.targets)
    assert c == defaults


def test_a_copy_of_the_default_is_a_valid_file(tmp_path, capsys):
    f = tmp_path / "damon.yaml"
    f.write_text(DEFAULT_CONFIG_YAML)
    assert check_config.main([str(f)]) == 0
    assert capsys.readouterr().out == f"{f}: OK (1 target, backend auto)\n"
    loaded = load_config(str(f))
    assert loaded.targets[0].keep_groups == "largest" and loaded.targets[0].max_groups == DEFAULT_TOP_PROGRAMS
