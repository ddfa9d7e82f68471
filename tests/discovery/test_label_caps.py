"""Label values from the system are bounded and stay distinct when cut."""

from __future__ import annotations

from exporter.discovery.labels import MAX_LABEL_VALUE, cap_value


def test_short_values_are_kept_and_long_ones_cut_with_a_stable_distinct_suffix():
    assert cap_value("web") == "web"
    assert cap_value("x" * MAX_LABEL_VALUE) == "x" * MAX_LABEL_VALUE
    a, b = "0" * 120_000 + "a", "0" * 120_000 + "b"
    ca, cb = cap_value(a), cap_value(b)
    assert len(ca) == len(cb) == MAX_LABEL_VALUE
    assert ca != cb and ca.startswith("0" * (MAX_LABEL_VALUE - 13))
    assert ca == cap_value(a)  # stable: the same series at every discovery
    assert cap_value("é" * 500).encode()  # still valid UTF-8
