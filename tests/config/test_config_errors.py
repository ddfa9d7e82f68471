"""Every kind of bad config gives exact, complete FILE:LINE: key.path: message lines."""

from __future__ import annotations

import re
import textwrap

import pytest

from exporter.config import Config, ConfigError, TargetConfig, load_config, parse_config
from exporter.model.attrs import MonitoringAttrs

OK_TARGETS = "targets:\n  - name: web\n    match: {comm: [nginx]}\n"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "c.yaml")
    assert str(info.value) == "\n".join(info.value.lines)
    return info.value.lines


def test_minimal_config_gets_all_defaults():
    c = parse_config(OK_TARGETS, "c.yaml")
    assert c == Config(
        path="c.yaml",
        backend="auto",
        monitoring=MonitoringAttrs(),
        cold_age=120.0,
        working_set_window=60.0,
        cpu_budget=0.05,
        targets=(TargetConfig(name="web", comm=("nginx",), line=2),),
    )
    assert parse_config(OK_TARGETS).path is None


def test_unknown_top_level_key():
    assert errors("backends: auto\n" + OK_TARGETS) == ["c.yaml:1: backends: unknown key (did you mean 'backend'?)"]
    assert errors("foo: 1\n" + OK_TARGETS) == [
        "c.yaml:1: foo: unknown key (expected one of: backend, monitoring, cold_age, working_set_window, cpu_budget, memory_limit, remove_empty_groups, histograms, kubernetes, targets)"
    ]


def test_unknown_nested_keys():
    assert errors(
        """\
        monitoring:
          sample_intervall: 5ms
        targets:
          - name: web
            match: {comm: [nginx], pid: [1]}
            include_childs: true
        """
    ) == [
        "c.yaml:2: monitoring.sample_intervall: unknown key (did you mean 'sample_interval'?)",
        "c.yaml:5: targets[0].match.pid: unknown key (expected one of: comm, exe, cmdline)",
        "c.yaml:6: targets[0].include_childs: unknown key (did you mean 'include_children'?)",
    ]


def test_wrong_types():
    assert errors(
        """\
        backend: 3
        monitoring: 100ms
        cpu_budget: lots
        targets:
          - name: 7
            match:
              comm: 12
              exe: [/bin/a, 5]
            include_children: yes please
          - name: b
            cgroup: [a]
          - just a string
        """
    ) == [
        "c.yaml:1: backend: expected a string, got int (quote it)",
        "c.yaml:2: monitoring: expected a mapping, got str",
        "c.yaml:3: cpu_budget: expected a number, got str",
        "c.yaml:5: targets[0].name: expected a string, got int (quote it)",
        "c.yaml:7: targets[0].match.comm: expected a list of strings, got int",
        "c.yaml:8: targets[0].match.exe[1]: expected a string, got int (quote it)",
        "c.yaml:9: targets[0].include_children: expected true or false, got str",
        "c.yaml:11: targets[1].cgroup: expected a cgroup path, got list",
        "c.yaml:12: targets[2]: expected a mapping, got str",
    ]
    assert errors("targets: {web: 1}\n") == ["c.yaml:1: targets: expected a list of targets, got mapping"]
    assert errors("monitoring: {min_regions: 3.5}\n" + OK_TARGETS) == [
        "c.yaml:1: monitoring.min_regions: expected an integer, got float"
    ]


def test_bad_durations():
    assert errors("monitoring:\n  sample_interval: 10 seconds\ncold_age: 5\nworking_set_window: 0s\n" + OK_TARGETS) == [
        "c.yaml:2: monitoring.sample_interval: not a duration: '10 seconds' "
        "(use a number and a unit: ms, s, m, h, d, w, y; e.g. 500ms, 10s, 1m30s)",
        "c.yaml:3: cold_age: expected a duration like 500ms, 10s or 2m, got 5",
        "c.yaml:4: working_set_window: duration must be greater than zero: '0s'",
    ]


def test_monitoring_attrs_rules_come_from_monitoring_attrs():
    assert errors("monitoring: {min_regions: 2}\n" + OK_TARGETS) == [
        "c.yaml:1: monitoring.min_regions: min_regions must be at least 3, got 2"
    ]
    assert errors("monitoring:\n  min_regions: 50\n  max_regions: 20\n" + OK_TARGETS) == [
        "c.yaml:2: monitoring.min_regions: min_regions (50) must not exceed max_regions (20)"
    ]
    # only the aggregation interval was set: it is the one blamed, the default is named
    assert errors("monitoring:\n  aggregation_interval: 200ms\n" + OK_TARGETS) == [
        "c.yaml:2: monitoring.aggregation_interval: sample_interval (500ms) must not exceed aggregation_interval (200ms)"
    ]
    assert errors("monitoring:\n  sample_interval: 3s\n  aggregation_interval: 1s\n" + OK_TARGETS) == [
        "c.yaml:2: monitoring.sample_interval: sample_interval (3s) must not exceed aggregation_interval (1s)"
    ]


def test_cross_check_skipped_when_a_value_is_already_bad():
    # sample_interval is unreadable: no second, default-based complaint about it
    assert errors("monitoring:\n  sample_interval: soon\n  aggregation_interval: 200ms\n" + OK_TARGETS) == [
        "c.yaml:2: monitoring.sample_interval: not a duration: 'soon' "
        "(use a number and a unit: ms, s, m, h, d, w, y; e.g. 500ms, 10s, 1m30s)"
    ]


@pytest.mark.parametrize("value", ["0", "-0.1", "1.5", "2"])
def test_cpu_budget_out_of_range(value):
    shown = {"0": "0", "-0.1": "-0.1", "1.5": "1.5", "2": "2"}[value]
    assert errors(f"cpu_budget: {value}\n" + OK_TARGETS) == [
        f"c.yaml:1: cpu_budget: must be greater than 0 and at most 1 (a share of one CPU core), got {shown}"
    ]


def test_cpu_budget_edges_accepted():
    assert parse_config("cpu_budget: 1\n" + OK_TARGETS).cpu_budget == 1.0
    assert parse_config("cpu_budget: 0.001\n" + OK_TARGETS).cpu_budget == 0.001


def test_unknown_backend():
    assert errors("backend: kdamond\n" + OK_TARGETS) == [
        "c.yaml:1: backend: unknown backend 'kdamond' (expected one of: auto, damon_sysfs, page_idle, clear_refs)"
    ]


def test_duplicate_target_name():
    assert errors(
        """\
        targets:
          - name: web
            match: {comm: [nginx]}
          - name: web
            cgroup: web.slice
        """
    ) == ["c.yaml:4: targets[1].name: duplicate target name 'web' (first at line 2)"]


def test_target_with_both_or_neither_match_and_cgroup():
    assert errors(
        """\
        targets:
          - name: both
            match: {comm: [a]}
            cgroup: a.slice
          - name: neither
            include_children: true
          - match: {comm: [b]}
        """
    ) == [
        "c.yaml:2: targets[0]: has both 'match' and 'cgroup'; use exactly one (or two targets)",
        "c.yaml:5: targets[1]: needs either 'match' (comm, exe, cmdline) or 'cgroup'",
        "c.yaml:7: targets[2]: missing 'name' (it becomes the target label)",
    ]


def test_match_needs_a_matcher_and_valid_values():
    assert errors(
        """\
        targets:
          - name: a
            match: {}
          - name: b
            match: {comm: []}
          - name: c
            match: {exe: [nginx, ''], comm: ['']}
        """
    ) == [
        "c.yaml:3: targets[0].match: needs at least one of comm, exe, cmdline",
        "c.yaml:5: targets[1].match.comm: empty list (leave the key out instead)",
        "c.yaml:7: targets[2].match.exe[0]: must be an absolute path, got 'nginx' (use comm for a process name)",
        "c.yaml:7: targets[2].match.exe[1]: empty string",
        "c.yaml:7: targets[2].match.comm[0]: empty string",
    ]


def test_bad_regex():
    assert errors("targets:\n  - name: a\n    match:\n      cmdline: ['--ok', '(unclosed']\n") == [
        "c.yaml:4: targets[0].match.cmdline[1]: bad regex '(unclosed': RE2 cannot compile it: missing ): (unclosed"
    ]


def test_bad_group_by_and_max_groups():
    assert errors(
        """\
        targets:
          - name: a
            match: {comm: [x]}
            group_by: [pid, node, pid]
            max_groups: 0
          - name: b
            match: {comm: [y]}
            max_groups: 5
          - name: c
            match: {comm: [z]}
            group_by: pid
        """
    ) == [
        "c.yaml:4: targets[0].group_by[1]: unknown group_by key 'node' "
        "(expected one of: pid, comm, cgroup, pod_uid, container_id, qos_class)",
        "c.yaml:4: targets[0].group_by[2]: duplicate group_by key 'pid'",
        "c.yaml:5: targets[0].max_groups: must be at least 1, got 0",
        "c.yaml:8: targets[1].max_groups: only applies together with group_by or a name template",
        "c.yaml:11: targets[2].group_by: expected a list of strings, got str",
    ]


def test_keep_groups_values_and_where_it_applies():
    assert errors(
        """\
        targets:
          - name: a
            match: {comm: [x]}
            group_by: [comm]
            keep_groups: biggest
          - name: b
            match: {comm: [y]}
            keep_groups: largest
        """
    ) == [
        "c.yaml:5: targets[0].keep_groups: unknown keep_groups 'biggest' (expected one of: stable, largest)",
        "c.yaml:8: targets[1].keep_groups: only applies together with group_by or a name template",
    ]
    c = parse_config("targets:\n  - {name: '{{.Comm}}', match: {comm: [x]}, keep_groups: largest}\n  - {name: g, match: {comm: [y]}, group_by: [pid]}\n")
    assert [t.keep_groups for t in c.targets] == ["largest", "stable"]


def test_bad_names_and_labels():
    assert errors(
        """\
        targets:
          - name: 'my web'
            match: {comm: [x]}
          - name: ok
            match: {comm: [y]}
            labels: {pid: '1', 2team: a, __x: b, team: 3, env: prod}
        """
    ) == [
        "c.yaml:2: targets[0].name: bad target name 'my web': use 1 to 128 letters, digits, '_', '.', ':' or '-' "
        "(not starting with '.', ':' or '-')",
        "c.yaml:6: targets[1].labels.pid: label name 'pid' is reserved (used by the exporter or by group_by)",
        "c.yaml:6: targets[1].labels.2team: bad label name '2team': use letters, digits and '_', not starting with a digit or '__'",
        "c.yaml:6: targets[1].labels.__x: bad label name '__x': use letters, digits and '_', not starting with a digit or '__'",
        "c.yaml:6: targets[1].labels.team: expected a string, got int (quote it)",
    ]


def test_bad_cgroup_patterns():
    assert errors(
        """\
        targets:
          - {name: a, cgroup: 'a/../b'}
          - {name: b, cgroup: 'x**/y'}
          - {name: c, cgroup: ''}
          - {name: d, cgroup: 'a/[bc'}
        """
    ) == [
        "c.yaml:2: targets[0].cgroup: '..' is not allowed in a cgroup path: 'a/../b'",
        "c.yaml:3: targets[1].cgroup: '**' must be a whole path component, got 'x**' in 'x**/y'",
        "c.yaml:4: targets[2].cgroup: empty cgroup path (use '/' for the root)",
        "c.yaml:5: targets[3].cgroup: unclosed '[' in '[bc'",
    ]


def test_cgroup_pattern_is_normalized():
    c = parse_config("targets:\n  - {name: a, cgroup: /batch.slice/**/}\n  - {name: b, cgroup: /}\n")
    assert [t.cgroup for t in c.targets] == ["batch.slice/**", "/"]


def test_duplicate_yaml_keys_are_errors_not_last_wins():
    assert errors("backend: auto\nbackend: clear_refs\n" + OK_TARGETS) == [
        "c.yaml:2: backend: duplicate key (first at line 1)"
    ]


def test_yaml_syntax_error_is_one_positioned_line():
    lines = errors("targets:\n  - name: web\n   match: {comm: [nginx]}\n")
    assert len(lines) == 1
    assert re.fullmatch(r"c\.yaml:3: YAML syntax error: .+", lines[0]), lines
    assert errors("targets: [a, b\n") == [
        "c.yaml:2: YAML syntax error: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence at line 1)"
    ]


def test_unsafe_tags_never_construct():
    # compose() accepts any tag; a tagged value is simply the wrong type for its key
    assert errors("backend: !!python/object:os.system x\n" + OK_TARGETS) == [
        "c.yaml:1: backend: expected a string, got tag tag:yaml.org,2002:python/object:os.system"
    ]


def test_empty_file_and_non_mapping():
    assert errors("") == ["c.yaml:1: empty config: expected a mapping with at least a 'targets' list"]
    assert errors("# only a comment\n") == ["c.yaml:1: empty config: expected a mapping with at least a 'targets' list"]
    assert errors("- a\n- b\n") == ["c.yaml:1: expected a mapping of settings at the top level, got list"]
    assert errors("backend: auto\n") == ["c.yaml:1: targets: missing: at least one target is required"]
    assert errors("targets: []\n") == ["c.yaml:1: targets: empty: at least one target is required"]


def test_several_errors_reported_together_in_file_order():
    lines = errors(
        """\
        backend: fast
        monitoring:
          sample_interval: 10 seconds
          min_regions: 2
        cpu_budget: 1.5
        targets:
          - name: web
            match:
              comm: 3
          - name: web
            cgroup: a.slice
        bogus: true
        """
    )
    assert lines == [
        "c.yaml:1: backend: unknown backend 'fast' (expected one of: auto, damon_sysfs, page_idle, clear_refs)",
        "c.yaml:3: monitoring.sample_interval: not a duration: '10 seconds' "
        "(use a number and a unit: ms, s, m, h, d, w, y; e.g. 500ms, 10s, 1m30s)",
        "c.yaml:4: monitoring.min_regions: min_regions must be at least 3, got 2",
        "c.yaml:5: cpu_budget: must be greater than 0 and at most 1 (a share of one CPU core), got 1.5",
        "c.yaml:9: targets[0].match.comm: expected a list of strings, got int",
        "c.yaml:10: targets[1].name: duplicate target name 'web' (first at line 7)",
        "c.yaml:12: bogus: unknown key (expected one of: backend, monitoring, cold_age, working_set_window, cpu_budget, memory_limit, remove_empty_groups, histograms, kubernetes, targets)",
    ]


def test_full_target_values():
    c = parse_config(
        textwrap.dedent(
            """\
            backend: clear_refs
            targets:
              - name: svc
                match:
                  comm: [averyveryverylongname, b]
                  exe: [/usr/bin/b]
                  cmdline: ['--port=\\d+', 'serve']
                include_children: true
                group_by: [comm, pid]
                max_groups: 7
                labels: {team: infra, env: prod}
            """
        )
    )
    (t,) = c.targets
    assert c.backend == "clear_refs"
    assert t.name == "svc" and t.line == 3
    assert t.comm == ("averyveryverylongname", "b") and t.exe == ("/usr/bin/b",)
    assert [p.pattern for p in t.cmdline] == [r"--port=\d+", "serve"]
    assert t.include_children and t.group_by == ("comm", "pid") and t.max_groups == 7
    assert t.labels == (("env", "prod"), ("team", "infra"))
    assert t.cgroup is None


def test_merge_keys_and_anchors_work():
    c = parse_config("targets:\n  - &base {name: a, match: {comm: [a]}, include_children: true}\n  - <<: *base\n    name: b\n")
    assert [(t.name, t.comm, t.include_children) for t in c.targets] == [("a", ("a",), True), ("b", ("a",), True)]


def test_unreadable_and_binary_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing))
    assert info.value.lines == [f"{missing}: cannot read: No such file or directory"]
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.lines == [f"{tmp_path}: not a regular file; refusing to read it"]
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"targets: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(binary))
    assert info.value.lines == [f"{binary}:1: not UTF-8 text (byte 9)"]


@pytest.mark.parametrize("key,value,floor", [
    ("sample_interval", "1ms", "5ms"),
    ("sample_interval", "4ms", "5ms"),
    ("aggregation_interval", "1ms", "100ms"),
    ("aggregation_interval", "99ms", "100ms"),
    ("update_interval", "1ms", "1s"),
    ("update_interval", "999ms", "1s"),
])
def test_intervals_below_their_floor_are_refused(key, value, floor):
    """1 ms intervals made one idle target cost half a core, out of the budget's reach."""
    assert errors(f"monitoring:\n  {key}: {value}\n" + OK_TARGETS) == [
        f"c.yaml:2: monitoring.{key}: {value} is shorter than the minimum of {floor}"
    ]


def test_intervals_at_their_floor_are_accepted():
    from exporter.config import parse_config

    m = parse_config("monitoring:\n  sample_interval: 5ms\n  aggregation_interval: 100ms\n  update_interval: 1s\n" + OK_TARGETS).monitoring
    assert (m.sample_interval, m.aggregation_interval, m.update_interval) == (0.005, 0.1, 1.0)
