"""Time as an injected dependency: the ``Clock`` protocol and a ``FakeClock`` for tests.

Pure packages never read the real clock; they take ``now`` as an argument. Services hold a
``Clock``. The real clock (``SystemClock``) lives in ``sluice.daemon.system_clock`` and is the
only place that calls ``time.time``/``time.monotonic``.

Public names: Clock, FakeClock, ScaledClock.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Clock", "FakeClock", "ScaledClock"]


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


class ScaledClock:
    """A clock whose wall time runs ``scale`` times faster than ``inner``'s (demos, tests).

    Only ``wall`` is scaled: the scheduler's ``now`` (retries, expiry, rates, backoff periods)
    moves ``scale`` times faster, so ``retry-after 30m`` passes in 0.5 s at ``scale=3600``.
    ``monotonic`` stays real, so network timeouts and intake deadlines keep their meaning.
    """

    def __init__(
        self, inner: Clock, scale: float, *, origin: tuple[float, float] | None = None
    ) -> None:
        if not scale > 0:
            raise ValueError("a time scale must be positive")
        self.inner = inner
        self.scale = scale
        #: (wall, monotonic) where scaled time starts: processes that share an origin (and
        #: the system's monotonic clock) share scaled time.
        self.origin = origin if origin is not None else (inner.wall(), inner.monotonic())
        self._wall0, self._mono0 = self.origin

    def monotonic(self) -> float:
        return self.inner.monotonic()

    def wall(self) -> float:
        return self._wall0 + (self.inner.monotonic() - self._mono0) * self.scale

    def real_seconds(self, seconds: float) -> float:
        """How long ``seconds`` of scaled wall time take in real time."""
        return seconds / self.scale
