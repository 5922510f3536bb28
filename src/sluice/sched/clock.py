"""Time and randomness as the scheduler sees them: plain numbers and an injected source.

The scheduler never reads a clock. Every method that needs the time takes ``now``: **wall-clock
epoch seconds as a float** (what :meth:`sluice.clock.Clock.wall` returns). Wall-clock seconds,
not monotonic ones, because the times the scheduler hands out (``next_attempt``, expiry) are
stored in the spool and must mean the same thing after a restart. The daemon passes
``clock.wall()``; tests pass numbers from a :class:`~sluice.clock.FakeClock`. If the wall clock
steps backwards, nothing breaks: due items simply wait a little longer.

Randomness (retry jitter, spreading recovered mail) comes from an injected object with a
``random() -> float`` method in ``[0, 1)``: a ``random.Random`` instance in the daemon, a seeded
one or a fixed stub in tests.

Public names: Clock, FakeClock (re-exported from :mod:`sluice.clock`), RandomSource,
FixedRandom. Nothing here raises.
"""

from __future__ import annotations

from typing import Protocol

from sluice.clock import Clock, FakeClock

__all__ = ["Clock", "FakeClock", "FixedRandom", "RandomSource"]


class RandomSource(Protocol):
    """Where jitter comes from: ``random.Random`` satisfies it."""

    def random(self) -> float:
        """A float uniformly distributed in ``[0.0, 1.0)``."""
        ...


class FixedRandom:
    """A :class:`RandomSource` that always returns the same value (0.5 means "no jitter")."""

    __slots__ = ("value",)

    def __init__(self, value: float = 0.5) -> None:
        if not 0.0 <= value < 1.0:
            raise ValueError("a random value lies in [0, 1)")
        self.value = value

    def random(self) -> float:
        return self.value
