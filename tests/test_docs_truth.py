"""What the docs name, the code has: paths, flags, backend order, metric names, error kinds.

Each check reads the docs users read (README, docs/, bench/README, the example config, the
deployment files, the dashboard and the alert rules) and fails on a name the code does not
have; each has a test of its own that it can fail."""

from __future__ import annotations

import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
CONFIGS = [ROOT / "config.example.yaml", *sorted((ROOT / "deploy").rglob("*.yaml")), *sorted((ROOT / "helm").rglob("*.yaml"))]
METRIC_FILES = [*DOCS, *CONFIGS, *sorted((ROOT / "deploy").rglob("*.json"))]


def text(paths: list[Path]) -> list[tuple[Path, int, str]]:
    return [(p, i, line) for p in paths for i, line in enumerate(p.read_text().splitlines(), 1)]


# -- paths ---------------------------------------------------------------------------------

_PATH = re.compile(r"(?<![\w/.-])exporter/[A-Za-z0-9_./]*[A-Za-z0-9_/]")


def bad_paths(lines) -> list[str]:
    out = []
    for p, i, line in lines:
        for m in _PATH.finditer(line):
            if not (ROOT / m.group(0)).exists():
                out.append(f"{p.relative_to(ROOT)}:{i}: {m.group(0)} does not exist")
    return out


def test_every_exporter_path_named_in_the_docs_exists():
    assert bad_paths(text(DOCS)) == []


def test_the_path_check_can_fail(tmp_path):
    f = tmp_path / "x.md"
    f.write_text("see `exporter/core/monitor.py`\n")
    assert bad_paths([(ROOT / "README.md", 1, "see `exporter/core/monitor.py`")]) == [
        "README.md:1: exporter/core/monitor.py does not exist"]


# -- flags ---------------------------------------------------------------------------------

def known_flags() -> set[str]:
    import argparse

    from exporter.commands import serve, snapshot

    flags = set()
    for parser in (serve.build_parser(), snapshot.build_parser()):
        for action in parser._actions:  # argparse keeps them here; there is no public list
            flags.update(o for o in action.option_strings if o.startswith("--"))
    assert isinstance(parser, argparse.ArgumentParser)
    return flags


_FLAG = re.compile(r"(?<![\w-])--(?:web|config|path|log)\.[a-z][a-z.-]*[a-z]")


def bad_flags(lines, flags: set[str]) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{i}: {m.group(0)} is no flag of damon-exporter"
            for p, i, line in lines for m in _FLAG.finditer(line) if m.group(0) not in flags]


def test_every_dotted_flag_named_in_the_docs_exists():
    assert bad_flags(text(DOCS + CONFIGS), known_flags()) == []


def test_the_flag_check_can_fail():
    assert bad_flags([(ROOT / "README.md", 3, "run with --web.listen-adress :1")], known_flags()) == [
        "README.md:3: --web.listen-adress is no flag of damon-exporter"]


# -- backends -------------------------------------------------------------------------------

def backend_lists(lines) -> list[tuple[str, list[str]]]:
    """Lists of backend names written as ``a | b | c`` or ``a|b|c``: the order users copy."""
    from exporter.engines.registry import BACKEND_NAMES

    names = "|".join(BACKEND_NAMES)
    rx = re.compile(rf"\b(?:{names})(?:\s*\|\s*(?:{names}))+\b")
    return [(f"{p.relative_to(ROOT)}:{i}", re.split(r"\s*\|\s*", m.group(0))) for p, i, line in lines
            if not line.lstrip().startswith("|")  # a table's columns are no list
            for m in rx.finditer(line)]


def misordered(lines) -> list[str]:
    from exporter.engines.registry import BACKEND_NAMES

    out = []
    for where, names in backend_lists(lines):
        order = [BACKEND_NAMES.index(n) for n in names]
        if order != sorted(order) or len(set(names)) != len(names):
            out.append(f"{where}: {' | '.join(names)} (the registry: {' | '.join(BACKEND_NAMES)})")
    return out


def test_backend_lists_follow_the_registry_order():
    lines = text(DOCS + CONFIGS)
    assert misordered(lines) == []
    # the example config names every backend, in auto's order
    (where, names), *_ = backend_lists(text([ROOT / "config.example.yaml"]))
    from exporter.engines.registry import BACKEND_NAMES

    assert tuple(names) == BACKEND_NAMES, where


def test_the_backend_check_can_fail():
    assert misordered([(ROOT / "README.md", 2, "backend: auto | page_idle | damon_sysfs")]) == [
        "README.md:2: auto | page_idle | damon_sysfs (the registry: auto | damon_sysfs | page_idle | clear_refs)"]


# -- metrics --------------------------------------------------------------------------------

_SUFFIXES = ("_bucket", "_sum", "_count", "_gcount", "_gsum", "_total", "_created")
_METRIC = re.compile(r"(?<![\w:])damon_[a-z_]+[a-z]")


def known_metrics() -> set[str]:
    from exporter.metrics.self_metrics import SELF_METRIC_NAMES
    from exporter.metrics.targets import TARGET_METRIC_NAMES

    return set(TARGET_METRIC_NAMES) | set(SELF_METRIC_NAMES)


def bad_metrics(lines, known: set[str]) -> list[str]:
    out = []
    for p, i, line in lines:
        for m in _METRIC.finditer(line):
            name = m.group(0)
            base = next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s) and name[: -len(s)] in known), name)
            if base not in known and not _not_a_metric(name):
                out.append(f"{p.relative_to(ROOT)}:{i}: {name}")
    return out


#: the kernel's own DAMON identifiers the docs cite (mm/damon, include/linux/damon.h)
_KERNEL_NAMES = {"damon_attrs", "damon_ctx", "damon_call", "damon_target_idx", "damon_operations",
                 "damon_merge_regions_of", "damon_split_regions_of", "damon_aggregated", "damon_register_ops"}


def _not_a_metric(name: str) -> bool:
    # the backend, files and kernel identifiers that share the prefix
    return name in {"damon_sysfs", "damon_exporter"} | _KERNEL_NAMES or name.startswith(("damon_sysfs_", "damon_exporter_state"))


def test_every_metric_named_in_docs_rules_and_dashboards_exists():
    assert bad_metrics(text(METRIC_FILES), known_metrics()) == []


def test_the_metric_check_can_fail():
    assert bad_metrics([(ROOT / "README.md", 7, "alert on damon_cold_bytez > 0")], known_metrics()) == ["README.md:7: damon_cold_bytez"]


# -- error kinds ----------------------------------------------------------------------------

def test_the_readme_lists_exactly_the_error_kinds():
    from exporter.model.errors import ERROR_KINDS

    readme = (ROOT / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| `damon_sampler_errors_total{kind}`")]
    listed = re.findall(r"`([a-z_]+)`", row.split("|")[3])
    assert listed == list(ERROR_KINDS)


# -- the metrics table ----------------------------------------------------------------------

def metrics_table(readme: str) -> dict[str, tuple[str, str]]:
    """The README's /metrics table: metric name -> (type, meaning)."""
    start = readme.index("**/metrics**")
    rows = {}
    for line in readme[start:].splitlines()[1:]:
        if line.startswith("| `damon_"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            for name in re.findall(r"`(damon_[a-z_]+)(?:\{[^}]*\})?`", cells[0]):
                rows[name] = (cells[1], cells[2])
        elif rows and not line.startswith("|"):
            break
    return rows


def table_errors(rows: dict[str, tuple[str, str]]) -> list[str]:
    from exporter.metrics.catalog import METRICS

    out = [f"{n}: in the README, not declared" for n in rows if n not in METRICS]
    for name, spec in METRICS.items():
        if name not in rows:
            out.append(f"{name}: declared, not in the README's table")
            continue
        kind, meaning = rows[name]
        if kind != spec.kind:
            out.append(f"{name}: README says {kind}, declared {spec.kind}")
        only = re.search(r"only with ((?:`\w+`(?:, | and )?)+)", meaning)
        said = frozenset(re.findall(r"`(\w+)`", only.group(1))) if only else None
        if said != spec.backends:
            out.append(f"{name}: README says only with {sorted(said) if said else 'every backend'}, "
                       f"declared {sorted(spec.backends) if spec.backends else 'every backend'}")
    return out


def test_the_readme_metrics_table_matches_the_declarations():
    rows = metrics_table((ROOT / "README.md").read_text())
    assert table_errors(rows) == []


def test_the_metrics_table_check_can_fail():
    rows = metrics_table((ROOT / "README.md").read_text())
    rows["damon_cold_bytes"] = ("counter", "cold")
    rows["damon_regions_max"] = ("gauge", "the cap; only with `page_idle`")
    del rows["damon_target_up"]
    assert table_errors(rows) == [
        "damon_target_up: declared, not in the README's table",
        "damon_regions_max: README says only with ['page_idle'], declared ['damon_sysfs', 'page_idle']",
        "damon_cold_bytes: README says counter, declared gauge",
    ]


# -- counts and claims that went stale --------------------------------------------------------
#
# Each check finds a kind of statement in the docs and holds it to the file that decides it:
# the alert rules, the dashboard, the test suite. A count nothing generates (boots, minutes a
# run takes) is not written at all.

_NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}


def _count(word: str) -> int | None:
    return int(word) if word.isdigit() else _NUMBERS.get(word.lower())


def alert_names() -> list[str]:
    import yaml

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]


_ALERT_COUNT = re.compile(r"\b(\w+) (?:`?Damon\*`? )?alerts\b")


def wrong_alert_counts(lines, alerts: list[str]) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{i}: {m.group(0)!r}, the rules have {len(alerts)}"
            for p, i, line in lines for m in _ALERT_COUNT.finditer(line)
            if _count(m.group(1)) is not None and _count(m.group(1)) != len(alerts)]


def test_alert_counts_match_the_rules():
    assert wrong_alert_counts(text(DOCS), alert_names()) == []


def test_the_alert_count_check_can_fail():
    assert wrong_alert_counts([(ROOT / "README.md", 4, "rules.yaml: 8 `Damon*` alerts (high cold ratio, ...)")],
                              ["A"] * 9) == ["README.md:4: '8 `Damon*` alerts', the rules have 9"]


def dashboard_variables() -> list[str]:
    import json

    board = json.loads((ROOT / "deploy" / "grafana" / "damon-exporter.json").read_text())
    return [v["name"] for v in board["templating"]["list"]]


_VARIABLES = re.compile(r"\bvariables(?: for)? ([^.;)]*)")


def wrong_dashboard_variables(lines, variables: list[str]) -> list[str]:
    out = []
    for p, i, line in lines:
        for m in _VARIABLES.finditer(line):
            named = [w for w in re.findall(r"[A-Za-z_]\w*", m.group(1)) if w not in {"and", "or", "the"}]
            if named and named != variables:
                out.append(f"{p.relative_to(ROOT)}:{i}: variables {named}, the dashboard has {variables}")
    return out


def test_dashboard_variables_named_in_the_docs_are_the_dashboards():
    lines = [(p, i, line) for p, i, line in text(DOCS) if "dashboard" in line.lower() or "grafana" in line.lower()
             or "variables `" in line]
    assert wrong_dashboard_variables(lines, dashboard_variables()) == []


def test_the_dashboard_variable_check_can_fail():
    line = "the exporter's CPU against its budget; variables for datasource, job, node and target."
    assert wrong_dashboard_variables([(ROOT / "README.md", 9, line)], ["datasource", "job", "instance", "target"]) == [
        "README.md:9: variables ['datasource', 'job', 'node', 'target'], the dashboard has "
        "['datasource', 'job', 'instance', 'target']"]


_BOOTS = re.compile(r"\b(\w+) boots?\b", re.I)
_RUN_MINUTES = re.compile(r"(?:pytest|suite|VM tests|CI run|in all)[^.]*?\b\d+(?:\.\d+)? minutes|"
                          r"\b\d+(?:\.\d+)? minutes[^.]*?(?:pytest|suite|VM tests|CI run)", re.I)


def unchecked_counts(lines) -> list[str]:
    """How many boots the VM tests take and how long a test run takes: nothing generates or
    checks these, and the suite changes under them, so the docs do not say them."""
    out = []
    for p, i, line in lines:
        out += [f"{p.relative_to(ROOT)}:{i}: {m.group(0)!r}" for m in _BOOTS.finditer(line) if _count(m.group(1)) is not None]
        out += [f"{p.relative_to(ROOT)}:{i}: {m.group(0)!r}" for m in _RUN_MINUTES.finditer(line)]
    return out


def test_no_boot_counts_or_run_times_in_the_docs():
    assert unchecked_counts(text(DOCS)) == []


def test_the_boot_and_minute_check_can_fail():
    lines = [(ROOT / "docs/testing.md", 1, "python -m pytest -m vm    # only the VM tests (~11 minutes: four boots)"),
             (ROOT / "README.md", 2, "- `python3 -m pytest` runs everything (about 14 minutes on 2 cores)")]
    assert unchecked_counts(lines) == ["docs/testing.md:1: 'four boots'", "docs/testing.md:1: 'pytest -m vm    # only the VM tests (~11 minutes'",
                                       "README.md:2: 'pytest` runs everything (about 14 minutes'"]


def _test_sources() -> list[tuple[Path, list[str]]]:
    return [(p, p.read_text().splitlines()) for p in sorted((ROOT / "tests").rglob("test_*.py"))]


_TIMED = re.compile(r"\b(?:cpu|elapsed|wall|alone|duration|took)\w*\b", re.I)


def timed_asserts(sources) -> list[str]:
    """Asserts that compare a CPU time or a duration."""
    return [f"{p.relative_to(ROOT)}:{i}" for p, lines in sources for i, line in enumerate(lines, 1)
            if line.lstrip().startswith("assert") and _TIMED.search(line) and re.search(r"[<>]=?", line)]


_SLEEP = re.compile(r"^(\s*)time\.sleep\(")


def sleeps_before_asserts(sources) -> list[str]:
    """A fixed sleep followed, at the same depth, by an assert: the assertion waited on time,
    not on the condition it checks."""
    out = []
    for p, lines in sources:
        for i, line in enumerate(lines):
            m = _SLEEP.match(line)
            if not m:
                continue
            following = [x for x in lines[i + 1:i + 4] if x.strip() and not x.strip().startswith("#")]
            if following and following[0].startswith(m.group(1) + "assert"):
                out.append(f"{p.relative_to(ROOT)}:{i + 1}")
    return out


#: claims about the suite, each with the scan that would prove it false
_SUITE_CLAIMS = {
    re.compile(r"never (?:assert|time)\w* (?:on )?(?:wall-clock|anything)|no wall-clock or CPU-share assertions"
               r"|asserts? no wall-clock", re.I): timed_asserts,
    re.compile(r"never a fixed sleep", re.I): sleeps_before_asserts,
}


def false_suite_claims(lines, sources) -> list[str]:
    out = []
    for p, i, line in lines:
        for claim, scan in _SUITE_CLAIMS.items():
            m = claim.search(line)
            if m and scan(sources):
                out.append(f"{p.relative_to(ROOT)}:{i}: {m.group(0)!r}, but {', '.join(scan(sources))}")
    return out


def test_what_the_docs_claim_of_the_suite_holds():
    assert false_suite_claims(text(DOCS), _test_sources()) == []


def test_the_suite_claim_check_can_fail():
    sources = [(ROOT / "tests/vm/test_x.py", ["    assert total <= 2 * alone, (cpu, alone)"]),
               (ROOT / "tests/test_y.py", ["    time.sleep(1.0)", "    # let it run", "    assert e.proc.poll() is None"])]
    lines = [(ROOT / "README.md", 1, "tests never time anything (no wall-clock or CPU-share assertions)"),
             (ROOT / "README.md", 2, "`wait.py` (wait for a condition, never a fixed sleep before an assertion)")]
    assert false_suite_claims(lines, sources) == [
        "README.md:1: 'never time anything', but tests/vm/test_x.py:1",
        "README.md:2: 'never a fixed sleep', but tests/test_y.py:1"]
    assert sleeps_before_asserts(_test_sources()) == [], "a test sleeps a fixed time, then asserts: wait on the condition"


# -- links between the docs -------------------------------------------------------------------

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


_LINK = re.compile(r"\]\(([^)\s#]*\.md)?(?:#([^)\s]+))?\)")


def broken_links(paths: list[Path], base: Path = ROOT) -> list[str]:
    out = []
    for p in paths:
        for i, line in enumerate(p.read_text().splitlines(), 1):
            for m in _LINK.finditer(line):
                target = (p.parent / m.group(1)).resolve() if m.group(1) else p
                if not target.is_file():
                    out.append(f"{p.relative_to(base)}:{i}: {m.group(1)} does not exist")
                elif m.group(2):
                    anchors = {slug(h.lstrip("#")) for h in target.read_text().splitlines() if h.startswith("#")}
                    if m.group(2) not in anchors:
                        out.append(f"{p.relative_to(base)}:{i}: #{m.group(2)} is no heading of {target.relative_to(base)}")
    return out


def test_links_between_the_docs_resolve():
    assert broken_links([ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]) == []


def test_the_link_check_can_fail(tmp_path):
    assert slug("Kernel DAMON (`damon_sysfs`)") == "kernel-damon-damon_sysfs"
    assert slug("Kernel DAMON's cost") == "kernel-damons-cost"
    (tmp_path / "design.md").write_text("# Design\n\n## Layers\n")
    (tmp_path / "x.md").write_text("[a](design.md#layers), [b](design.md#no-such-heading), [c](nowhere.md)\n")
    assert broken_links([tmp_path / "x.md"], tmp_path.resolve()) == [
        "x.md:1: #no-such-heading is no heading of design.md", "x.md:1: nowhere.md does not exist"]


def test_the_readme_stays_a_front_door():
    """At most 350 lines (issue 33): design, figures and operations live in docs/."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 350, f"README.md has {len(lines)} lines; move detail to docs/"
