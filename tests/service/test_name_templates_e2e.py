"""Name templates and remove_empty_groups through the running exporter: one target per
program from one config line, and a target without processes gone from /metrics."""

from __future__ import annotations

from tests.support.exporter import fast_config, unique_comm


def test_comm_template_and_remove_empty_groups(exporter, children):
    a = children(unique_comm("ta"), hot_mib=2, cold_mib=2)
    b = children(unique_comm("tb"), hot_mib=2, cold_mib=2)
    missing = unique_comm("tmiss")
    targets = (
        f'  - name: "{{{{.Comm}}}}"\n    match:\n      comm: [{a.name}, {b.name}]\n'
        f"  - name: absent\n    match:\n      comm: [{missing}]\n"
    )
    kept = exporter(fast_config(targets))
    removed = exporter("remove_empty_groups: true\n" + fast_config(targets))
    for e in (kept, removed):
        e.wait_ready()
        s = e.wait_for(lambda s: s.get("damon_target_up", target=a.name) == 1 and s.get("damon_target_up", target=b.name) == 1,
                       what="both programs up")
        assert s.get("damon_target_processes", target=a.name) == 1
        assert s.get("damon_resident_bytes", target=b.name) > 0
    assert kept.scrape().get("damon_target_up", target="absent") == 0
    page = removed.request("/").text
    assert a.name in page and b.name in page and "absent" not in page
    assert not [x for x in removed.scrape().samples if x.labels.get("target") == "absent"]
