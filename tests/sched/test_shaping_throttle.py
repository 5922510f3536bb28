"""The GCRA rate limiter: smooth spacing, the burst rule, multi-unit requests, re-rating."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shaping_net import max_in_window

from sluice.sched import Gcra, RateLimit
from sluice.sched.throttle import limiter, slower


def test_rate_limit_validates_and_formats() -> None:
    with pytest.raises(ValueError, match="count"):
        RateLimit(count=0, seconds=3600)
    with pytest.raises(ValueError, match="burst"):
        RateLimit(count=1, seconds=1, burst=0)
    assert RateLimit.per_hour(5000).interval == pytest.approx(0.72)
    assert str(RateLimit.per_hour(1000)) == "1000/h"
    assert str(RateLimit(count=3, seconds=300)) == "3/300s"
    assert str(RateLimit(count=10, seconds=60)) == "10/m"


def test_5000_per_hour_is_one_every_0_72_seconds_not_a_burst() -> None:
    g = Gcra(RateLimit.per_hour(5000))
    t = 1000.0
    assert g.try_take(t, 1) is None
    # Nothing more in the first second: the hour's budget is not front-loaded.
    assert g.try_take(t + 0.5, 1) == pytest.approx(t + 0.72)
    assert g.try_take(t + 0.72, 1) is None
    assert g.try_take(t + 1.0, 1) == pytest.approx(t + 1.44)


def test_exactly_the_rate_over_an_hour_when_always_asked_on_time() -> None:
    g = Gcra(RateLimit.per_hour(5000))
    t, taken = 0.0, 0
    while t < 3600.0 - 1e-6:  # [0, 3600): float error must not add a unit
        at = g.try_take(t, 1)
        if at is None:
            taken += 1
        else:
            t = at
    assert taken == 5000


def test_burst_allows_that_many_back_to_back_then_spaces() -> None:
    g = Gcra(RateLimit(count=10, seconds=10, burst=3))
    assert [g.try_take(0.0, 1) for _ in range(3)] == [None, None, None]
    assert g.try_take(0.0, 1) == pytest.approx(1.0)
    assert g.try_take(1.0, 1) is None
    assert g.try_take(1.5, 1) == pytest.approx(2.0)


def test_multi_unit_request_goes_whole_then_costs_its_units() -> None:
    g = Gcra(RateLimit(count=1, seconds=1))
    assert g.try_take(0.0, 5) is None  # a 5-recipient transaction
    assert g.try_take(1.0, 1) == pytest.approx(5.0)
    assert g.try_take(5.0, 1) is None


def test_set_rate_keeps_what_was_taken() -> None:
    g = Gcra(RateLimit.per_hour(5000))
    assert g.try_take(0.0, 1) is None
    g.set_rate(RateLimit.per_hour(1000))  # entering backoff: no fresh burst
    assert g.try_take(0.1, 1) == pytest.approx(3.6)  # one new interval after the last
    assert g.try_take(3.6, 1) is None
    assert g.try_take(4.0, 1) == pytest.approx(7.2)
    g.set_rate(RateLimit.per_hour(5000))  # back to normal: the faster spacing at once
    assert g.try_take(4.0, 1) == pytest.approx(3.6 + 0.72)


def test_limiter_and_slower_helpers() -> None:
    fast, slow = RateLimit.per_hour(5000), RateLimit.per_hour(1000)
    assert slower(fast, slow) is slow
    assert slower(None, slow) is slow
    assert slower(fast, None) is fast
    assert limiter(None, None) is None
    g = limiter(None, fast)
    assert g is not None
    assert limiter(g, slow) is g
    assert g.rate == slow


@given(
    count=st.integers(1, 50),
    seconds=st.sampled_from([1.0, 10.0, 60.0, 3600.0]),
    burst=st.integers(1, 5),
    gaps=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=200),
)
def test_no_window_ever_holds_more_than_burst_plus_rate(
    count: int, seconds: float, burst: int, gaps: list[float]
) -> None:
    rate = RateLimit(count=count, seconds=seconds, burst=burst)
    g = Gcra(rate)
    t = 0.0
    taken: list[float] = []
    for gap in gaps:
        t += gap
        if g.try_take(t, 1) is None:
            taken.append(t)
    for window in (rate.interval * 0.5, rate.interval, rate.interval * 3, seconds):
        assert max_in_window(taken, window) <= burst + window / rate.interval + 1e-9
