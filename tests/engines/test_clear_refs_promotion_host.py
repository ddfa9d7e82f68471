"""Cold memory that comes back, on a real process of this host, on an injected clock.

The clear_refs engine reads the kernel's real ``Referenced`` bits through ``smaps`` and
clears them through ``clear_refs``; only time is virtual. The process
(``tests/workloads/touch.c``) writes the pages the test names, so the test decides what is
accessed in each sample interval and knows the truth exactly, and minutes of virtual time
take seconds.

The layout: 512 MiB, the top 64 MiB written every sample interval; after 45 s, the cold rest
comes back 8 MiB at a time, each chunk written for 4 s (or one sample interval) every 10 s
and untouched since it was
made resident (far longer than ``cold_age``, 20 s). Over two minutes that begin once returns
have gone on for a clear period, every return is counted once by its idle age
(``count`` grows by the revived bytes, within the issue's 25%), nothing before the first
return, and the promoted bytes grow by the revived bytes within 25% with the published error
bracketing the truth: clear_refs proves a return where a first touch comes at least cold_age
after a clear, and estimates those before it at the rate the periods proved.
"""

from __future__ import annotations

import pytest

from exporter.engines.clear_refs.engine import ReferencedBytesEngine
from exporter.model.attrs import MonitoringAttrs
from exporter.summary.promotion import Promotions
from tests.support.touch_driver import TouchProcess, drive
from tests.support.workloads import build_workload

MiB = 1 << 20
SIZE, HOT, CHUNK = 512, 64, 8
REVIVE_AFTER, EVERY = 45.0, 10.0
COLD_AGE, WINDOW = 20.0, 5.0
#: the exporter's fast test config (tests/support/exporter.py: 200 ms samples, 1 s aggregations)
ATTRS = MonitoringAttrs(0.2, 1.0, 10.0, 3, 10)


@pytest.fixture
def touched(tmp_path):
    t = TouchProcess(build_workload("touch.c", tmp_path, "dxtouch"), SIZE)
    yield t
    t.close()


def run(t: TouchProcess, seconds: float, for_: float) -> tuple[list[tuple[float, Promotions]], list[tuple[float, int]]]:
    """The promotions after every aggregation over ``seconds`` of virtual time, each chunk
    written for ``for_`` seconds, and every chunk revived: (virtual start, chunk index)."""
    revived: list[tuple[float, int]] = []
    nchunks = (SIZE - HOT) // CHUNK

    def schedule(now: float) -> list[tuple[int, int]]:
        ranges = [((SIZE - HOT) * MiB, SIZE * MiB)]
        if now >= REVIVE_AFTER:
            k = int((now - REVIVE_AFTER) // EVERY)
            if k < nchunks and now - REVIVE_AFTER - k * EVERY < for_:
                if not revived or revived[-1][1] != k:
                    revived.append((now, k))
                ranges.append((k * CHUNK * MiB, (k + 1) * CHUNK * MiB))
        return ranges

    return drive(t, ATTRS, WINDOW, COLD_AGE, schedule, seconds), revived


def above(p: Promotions, le: float) -> float:
    """Bytes that came back after more than ``le`` seconds of idleness."""
    return p.count - dict(p.histogram)[le]


# 4 s, and one sample interval: a Referenced bit keeps a touch of any length until the next
# clear, so clear_refs counts even the shortest return by its bytes (the engine publishes 0
# as damon_sampler_shortest_counted_return_seconds)
@pytest.mark.parametrize("for_", [4.0, ATTRS.sample_interval])
def test_revived_cold_memory_is_counted_once_by_its_idle_age(touched, for_):
    # the engine claims every return, however short, is counted by its bytes
    assert ReferencedBytesEngine(attrs=ATTRS).shortest_counted_return(ATTRS.aggregation_interval) <= for_
    seen, revived = run(touched, REVIVE_AFTER + 20 * EVERY, for_)
    assert revived[0][0] == pytest.approx(REVIVE_AFTER, abs=ATTRS.sample_interval)
    # steady until the first return: hot stays hot, cold stays cold
    before = [p for at, p in seen if at <= REVIVE_AFTER]
    assert before and all(p.promoted_bytes <= 1 * MiB and p.count <= 1 * MiB for p in before), before[-1]
    # two minutes once returns have gone on for a clear period (40 to 60 s at cold_age 20 s),
    # from and to the middle of the gap between two returns: twelve returns, 96 MiB
    t0 = REVIVE_AFTER + 6 * EVERY + EVERY / 2
    t1 = t0 + 12 * EVERY
    p0 = next(p for at, p in seen if at >= t0)
    p1 = next(p for at, p in seen if at >= t1)
    truth = CHUNK * MiB * sum(1 for at, _ in revived if t0 < at < t1)
    assert truth == 12 * CHUNK * MiB, truth / MiB
    grew = p1.promoted_bytes - p0.promoted_bytes
    error = p1.promoted_error_bytes - p0.promoted_error_bytes
    returned = p1.count - p0.count
    detail = f"promoted +{grew / MiB:.1f} MiB (error +{error / MiB:.1f}), returns +{returned / MiB:.1f}, truth {truth / MiB:.0f} MiB"
    print(detail)  # for docs/accuracy.md: python3 -m pytest -s tests/engines/test_clear_refs_promotion_host.py
    # every return is seen, once: clear_refs counts first touches exactly
    assert abs(returned - truth) <= 0.25 * truth, detail
    # returns past cold_age after a clear are proven; those before it are estimated at the
    # rate the periods proved them at, within the published error
    assert abs(grew - truth) <= 0.25 * truth, detail
    assert grew - error <= truth <= grew + error, detail
    # and the histogram agrees: what came back after more than 10 s holds the counter's
    assert grew - 4096 <= above(p1, 10.0) - above(p0, 10.0) <= returned + 4096, detail
