"""SystemClock: the one place in Sluice that reads the real clock."""

from __future__ import annotations

import time

__all__ = ["SystemClock"]


class SystemClock:
    """The real clock, satisfying :class:`sluice.clock.Clock`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()
