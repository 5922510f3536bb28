"""TimeQ: due-ordered release, never early, whole-second buckets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.sched import EMPTY, Ready, Sleep, TimeQ


def test_empty_queue_says_empty() -> None:
    assert TimeQ[str]().pop_due(100.0) is EMPTY


def test_sleep_until_the_first_bucket() -> None:
    q: TimeQ[str] = TimeQ()
    q.push(105.2, "a")
    assert q.pop_due(100.0) == Sleep(seconds=6.0)  # rounded up to 106
    assert q.next_due() == 106.0
    assert q.pop_due(105.5) == Sleep(seconds=0.5)
    assert q.pop_due(106.0) == Ready(items=["a"])
    assert q.pop_due(106.0) is EMPTY


def test_releases_everything_due_in_order() -> None:
    q: TimeQ[int] = TimeQ()
    for due, item in [(30.0, 3), (10.0, 1), (20.0, 2), (10.0, 11), (40.0, 4)]:
        q.push(due, item)
    assert len(q) == 5
    assert q.pop_due(30.0) == Ready(items=[1, 11, 2, 3])
    assert len(q) == 1
    assert q.drain() == [4]
    assert len(q) == 0


def test_resolution_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TimeQ[int](0)


@given(
    st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=50),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_never_early_never_lost(dues: list[float], now: float) -> None:
    q: TimeQ[int] = TimeQ()
    for i, due in enumerate(dues):
        q.push(due, i)
    popped = q.pop_due(now)
    got = popped.items if isinstance(popped, Ready) else []
    assert all(dues[i] <= now for i in got)
    assert sorted(got + q.drain()) == list(range(len(dues)))
