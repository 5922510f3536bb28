"""When a deferred recipient is tried again, and when it has waited long enough to bounce.

The rule, for a recipient that arrived at ``arrival`` and has just failed for the ``attempts``-th
time (``attempts`` >= 1) at ``now``:

1. ``expiry = arrival + bounce_after``. If ``now >= expiry``, it bounces now.
2. The base delay is ``retry_after[attempts - 1]`` (the last entry repeats).
3. Jitter: the delay is drawn uniformly from ``[base·(1-j), base·(1+j)]``, ``j = jitter``.
4. Floor: the delay is at least ``min_retry_interval``.
5. If ``now + delay`` falls at or after ``expiry``, the next "attempt" is the expiry itself:
   the recipient comes due at ``expiry`` and bounces then, without another connection.

So a recipient bounces at its expiry time (not one retry interval later), no retry ever
comes sooner than ``min_retry_interval`` after the previous attempt, and a wave of deferrals
comes back spread over ±``jitter`` of the delay.

Public names: expiry_time, retry_delay, next_attempt, jittered. Nothing here raises.
"""

from __future__ import annotations

from sluice.sched.clock import RandomSource
from sluice.sched.settings import QueueSettings

__all__ = ["expiry_time", "jittered", "next_attempt", "retry_delay"]


def expiry_time(arrival: float, settings: QueueSettings) -> float:
    """When a recipient that arrived at ``arrival`` bounces if still undelivered."""
    return arrival + settings.bounce_after


def jittered(delay: float, jitter: float, rng: RandomSource) -> float:
    """``delay`` spread uniformly over ``[delay·(1-jitter), delay·(1+jitter)]``."""
    if jitter <= 0.0:
        return delay
    return delay * (1.0 + jitter * (2.0 * rng.random() - 1.0))


def retry_delay(
    attempts: int,
    retry_after: tuple[float, ...],
    settings: QueueSettings,
    rng: RandomSource,
) -> float:
    """Seconds to wait after the ``attempts``-th failure (jittered, floored)."""
    base = retry_after[min(max(attempts, 1), len(retry_after)) - 1]
    return max(settings.min_retry_interval, jittered(base, settings.jitter, rng))


def next_attempt(
    *,
    now: float,
    arrival: float,
    attempts: int,
    retry_after: tuple[float, ...],
    settings: QueueSettings,
    rng: RandomSource,
) -> float | None:
    """When to try again after the ``attempts``-th failure at ``now``; None = bounce now.

    ``retry_after`` is the list in force (the queue's mode may replace the settings' own).
    A returned time equal to the expiry means "bounce then".
    """
    expiry = expiry_time(arrival, settings)
    if now >= expiry:
        return None
    return min(now + retry_delay(attempts, retry_after, settings, rng), expiry)
