import math

import pytest

from exporter.model.attrs import AttrsError, MonitoringAttrs
from exporter.model.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    "text,seconds",
    [("500ms", 0.5), ("10s", 10), ("2m", 120), ("1m30s", 90), ("1h", 3600), ("1d", 86400), ("1h2m3s4ms", 3723.004)],
)
def test_parse_duration(text, seconds):
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize("text", ["", "10", "10 seconds", "1.5s", "-1s", "s", "10S", "1m 30s"])
def test_parse_duration_rejects(text):
    with pytest.raises(DurationError) as e:
        parse_duration(text)
    assert str(e.value) == (
        f"not a duration: {text!r} (use a number and a unit: ms, s, m, h, d, w, y; e.g. 500ms, 10s, 1m30s)"
    )


def test_zero_duration_rejected():
    with pytest.raises(DurationError, match=r"^duration must be greater than zero: '0s'$"):
        parse_duration("0s")


def test_format_duration_round_trips():
    for s in (0.005, 0.1, 2, 60, 90, 3723.004):
        assert math.isclose(parse_duration(format_duration(s)), s)


def test_attrs_defaults_are_valid():
    a = MonitoringAttrs()
    assert a.max_nr_accesses == round(a.aggregation_interval / a.sample_interval)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"min_regions": 2}, "min_regions must be at least 3, got 2"),
        ({"min_regions": 50, "max_regions": 20}, "min_regions (50) must not exceed max_regions (20)"),
        (
            {"sample_interval": 3.0, "aggregation_interval": 2.0},
            "sample_interval (3s) must not exceed aggregation_interval (2s)",
        ),
        ({"sample_interval": 0}, "sample_interval must be a positive duration, got 0"),
        ({"update_interval": -1}, "update_interval must be a positive duration, got -1"),
        ({"max_regions": 10.5}, "max_regions must be an integer, got 10.5"),
    ],
)
def test_attrs_validation_messages(kwargs, message):
    with pytest.raises(AttrsError) as e:
        MonitoringAttrs(**kwargs)
    assert str(e.value) == message
