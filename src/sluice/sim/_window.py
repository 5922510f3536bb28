"""Per-source counting for the simulators: rolling windows, token buckets, the drain bound.

Pure: every method takes ``now`` (seconds on any monotonic clock). A message *reserves* a
slot when its first recipient is accepted, and the slot is either *committed* (the message
was accepted after the final dot) or *released* (the transaction ended otherwise), so that
concurrent transactions from many connections can never overshoot a limit.

Public names:

- :class:`RollingWindow`: at most ``limit`` messages in any ``span`` seconds.
- :class:`TokenBucket`: ``capacity`` tokens refilled smoothly at ``capacity / span`` per second.
- :class:`Budget`: the protocol both satisfy.
- :func:`greedy_drain_time`: the earliest time the last of N messages can be accepted under a
  budget and a throttle window (the bound behind ``fastest_drain_time``).

Raises: ValueError for a non-positive limit or span.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

__all__ = ["Budget", "RollingWindow", "TokenBucket", "greedy_drain_time"]


class Budget(Protocol):
    """A per-source message allowance with reservations."""

    def has_room(self, now: float) -> bool:
        """Could one more message be reserved at ``now``?"""
        ...

    def reserve(self, now: float) -> None:
        """Hold a slot for a message in flight (call only after ``has_room``)."""
        ...

    def commit(self, now: float) -> None:
        """The held slot became an accepted message at ``now``."""
        ...

    def release(self, now: float) -> None:
        """The held slot is given back (the transaction did not end in acceptance)."""
        ...

    def used(self, now: float) -> float:
        """Messages counted against the limit at ``now`` (accepted in the window + held)."""
        ...


class RollingWindow:
    """At most ``limit`` messages accepted in any ``span`` seconds, held slots included.

    A message accepted at ``t`` stops counting at ``t + span`` exactly, so the fastest
    schedule accepts message ``i + limit`` no earlier than ``t_i + span``.
    """

    __slots__ = ("_times", "inflight", "limit", "span")

    def __init__(self, limit: int, span: float) -> None:
        if limit < 1 or span <= 0:
            raise ValueError("a rolling window needs limit >= 1 and span > 0")
        self.limit = limit
        self.span = span
        self.inflight = 0
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        times = self._times
        edge = now - self.span
        while times and times[0] <= edge:
            times.popleft()

    def used(self, now: float) -> float:
        self._expire(now)
        return len(self._times) + self.inflight

    def has_room(self, now: float) -> bool:
        return self.used(now) < self.limit

    def reserve(self, now: float) -> None:
        self.inflight += 1

    def commit(self, now: float) -> None:
        if self.inflight > 0:
            self.inflight -= 1
        self._times.append(now)

    def release(self, now: float) -> None:
        if self.inflight > 0:
            self.inflight -= 1

    def next_free_at(self, now: float) -> float:
        """When the oldest accepted message leaves the window (``now`` if there is room)."""
        if self.has_room(now) or not self._times:
            return now
        return self._times[0] + self.span


class TokenBucket:
    """``capacity`` tokens, full at the start, refilled at ``capacity / span`` per second.

    Reserving takes a token, releasing gives it back (never above ``capacity``).
    """

    __slots__ = ("_stamp", "_tokens", "capacity", "rate", "span")

    def __init__(self, capacity: int, span: float) -> None:
        if capacity < 1 or span <= 0:
            raise ValueError("a token bucket needs capacity >= 1 and span > 0")
        self.capacity = capacity
        self.span = span
        self.rate = capacity / span
        self._tokens = float(capacity)
        self._stamp: float | None = None

    def _refill(self, now: float) -> float:
        stamp = self._stamp
        if stamp is not None and now > stamp:
            self._tokens = min(float(self.capacity), self._tokens + (now - stamp) * self.rate)
        if stamp is None or now > stamp:
            self._stamp = now
        return self._tokens

    def used(self, now: float) -> float:
        return self.capacity - self._refill(now)

    def has_room(self, now: float) -> bool:
        # A tiny tolerance absorbs float error in (now - stamp) * rate.
        return self._refill(now) >= 1.0 - 1e-9

    def reserve(self, now: float) -> None:
        self._tokens = self._refill(now) - 1.0

    def commit(self, now: float) -> None:
        return None

    def release(self, now: float) -> None:
        self._tokens = min(float(self.capacity), self._refill(now) + 1.0)


def greedy_drain_time(
    messages: int,
    *,
    budget: int,
    budget_span: float,
    bucket: bool,
    throttle: int | None,
    throttle_span: float,
) -> float:
    """Seconds from the first accepted message (at 0) to the last, when every message is
    accepted at the earliest moment the budget and the throttle allow.

    Constraints, as the profiles enforce them: a rolling budget makes message ``i`` wait
    until ``t[i - budget] + budget_span`` (a bucket: until a token has refilled); a throttle
    of ``throttle`` per ``throttle_span`` makes it wait until ``t[i - throttle] +
    throttle_span``. Taking each message as early as possible is optimal, because every
    constraint only looks back at earlier acceptance times.
    """
    if messages <= 0:
        return 0.0
    times: list[float] = []
    tokens = float(budget)
    rate = budget / budget_span
    last = 0.0
    for i in range(messages):
        t = last
        if throttle is not None and i >= throttle:
            t = max(t, times[i - throttle] + throttle_span)
        if bucket:
            have = min(float(budget), tokens + (t - last) * rate)
            if have < 1.0:
                t += (1.0 - have) / rate
                have = 1.0
            tokens = have - 1.0
        elif i >= budget:
            t = max(t, times[i - budget] + budget_span)
        times.append(t)
        last = t
    return last
