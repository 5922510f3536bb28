"""Time as an injected dependency: the ``Clock`` protocol and a ``FakeClock`` for tests.

Pure packages never read the real clock; they take ``now`` as an argument. Services hold a
``Clock``. The real clock (``SystemClock``) lives in ``sluice.daemon.system_clock`` and is the
only place that calls ``time.time``/``time.monotonic``.

Public names: Clock, FakeClock.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Clock", "FakeClock"]


class Clock(Protocol):
    """Where services get the time from."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for timers and rates)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch (for timestamps in records and headers)."""
        ...


class FakeClock:
    """A clock that moves only when told to (``advance``); wall and monotonic move together."""

    def __init__(self, start_wall: float = 1_800_000_000.0, start_monotonic: float = 1000.0):
        self._wall = start_wall
        self._mono = start_monotonic

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock never goes back")
        self._wall += seconds
        self._mono += seconds
