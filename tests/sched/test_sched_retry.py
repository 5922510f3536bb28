"""Retry delays: successive retry-after entries, jitter, min-retry-interval floor, expiry."""

from __future__ import annotations

import random

import pytest

from sluice.sched import FixedRandom, QueueSettings
from sluice.sched.retry import expiry_time, jittered, next_attempt, retry_delay

NO_JITTER = FixedRandom(0.5)


def test_successive_entries_then_the_last_repeats() -> None:
    s = QueueSettings(retry_after=(60.0, 300.0, 3600.0), jitter=0.0)
    delays = [retry_delay(n, s.retry_after, s, NO_JITTER) for n in range(1, 7)]
    assert delays == [60.0, 300.0, 3600.0, 3600.0, 3600.0, 3600.0]


def test_min_retry_interval_is_a_floor_even_after_jitter() -> None:
    s = QueueSettings(retry_after=(60.0, 600.0), min_retry_interval=120.0, jitter=0.5)
    low = FixedRandom(0.0)  # the most negative jitter
    assert retry_delay(1, s.retry_after, s, low) == 120.0
    assert retry_delay(2, s.retry_after, s, low) == 300.0  # 600 - 50 %, above the floor


def test_jitter_spreads_within_bounds() -> None:
    rng = random.Random(7)
    values = [jittered(600.0, 0.1, rng) for _ in range(2000)]
    assert min(values) >= 540.0
    assert max(values) <= 660.0
    assert max(values) - min(values) > 100.0  # actually spread
    assert jittered(600.0, 0.0, rng) == 600.0


def test_next_attempt_is_clamped_to_expiry_and_none_after_it() -> None:
    s = QueueSettings(retry_after=(3600.0,), bounce_after=7200.0, jitter=0.0)
    assert expiry_time(1000.0, s) == 8200.0
    kw = {"arrival": 1000.0, "retry_after": s.retry_after, "settings": s, "rng": NO_JITTER}
    assert next_attempt(now=1000.0, attempts=1, **kw) == 4600.0  # type: ignore[arg-type]
    assert next_attempt(now=6000.0, attempts=2, **kw) == 8200.0  # type: ignore[arg-type]
    assert next_attempt(now=8200.0, attempts=3, **kw) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_smtp_out": -1},
        {"retry_after": ()},
        {"retry_after": (-1.0,)},
        {"queue_priority": 101},
        {"jitter": 1.0},
        {"bounce_after": -5.0},
    ],
)
def test_settings_reject_impossible_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must|needs"):
        QueueSettings(**kwargs)  # type: ignore[arg-type]


def test_fixed_random_rejects_values_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="lies in"):
        FixedRandom(1.0)
