"""Pool member choice (smooth weighted round robin) and source-IP rotation."""

from __future__ import annotations

from collections import Counter

import pytest

from sluice.routing import (
    PoolChooser,
    PoolMember,
    RoutingConfigError,
    SmoothRoundRobin,
    SourceChooser,
    SourceHost,
)


def test_smooth_wrr_matches_nginx_sequence() -> None:
    rr = SmoothRoundRobin([("a", 5), ("b", 1), ("c", 1)])
    assert [rr.pick() for _ in range(14)] == list("aabacaa") * 2


def test_each_window_of_total_weight_has_exact_shares() -> None:
    rr = SmoothRoundRobin([("x", 3), ("y", 2), ("z", 1)])
    for _ in range(5):
        window = Counter(rr.pick() for _ in range(6))
        assert window == {"x": 3, "y": 2, "z": 1}


def test_equal_weights_are_plain_round_robin() -> None:
    pool = PoolChooser("marketing", [PoolMember(vmta="m1"), PoolMember(vmta="m2")])
    assert [pool.choose() for _ in range(5)] == ["m1", "m2", "m1", "m2", "m1"]


def test_skipped_members_are_passed_over_and_the_rest_share() -> None:
    pool = PoolChooser("p", [PoolMember(vmta=v) for v in ("a", "b", "c")])
    picks = [pool.choose(skip={"b"}) for _ in range(6)]
    assert Counter(picks) == {"a": 3, "c": 3}
    assert pool.choose(skip={"a", "b", "c"}) is None


def test_bad_members_are_config_errors() -> None:
    with pytest.raises(RoutingConfigError):
        SmoothRoundRobin[str]([])
    with pytest.raises(RoutingConfigError):
        PoolChooser("p", [PoolMember(vmta="a", weight=0)])


def test_sources_rotate_per_connection() -> None:
    s1 = SourceHost(address="127.0.0.2", hostname="a.example.test")
    s2 = SourceHost(address="127.0.0.3", hostname="b.example.test")
    chooser = SourceChooser([s1, s2])
    assert chooser.sources == (s1, s2)
    assert [chooser.choose() for _ in range(4)] == [s1, s2, s1, s2]
    assert chooser.choose(skip={s1}) == s2
