"""Rate limits the planner asks before it connects or hands out work, and the GCRA behind them.

The scheduler core knows rate limits through the small :class:`Throttle` protocol: before each
``Connect`` it asks the connect throttles for one unit, and before each ``Deliver`` it asks the
message throttles for one unit per recipient and the volume throttles for one unit per byte of
the message. A throttle that refuses returns the time at which the request could succeed; the
planner then leaves the queue (or that connection) alone until that time — it registers a
precise wake-up — and other queues are unaffected.

The limits of the configuration (``max-msg-rate``, ``max-connect-rate``,
``max-data-volume-rate``, their ``backoff-*`` and ``source-ip-*`` variants,
``smtp-out-rampup-interval``) are described by :class:`RateLimit` values in the queue's
settings and enforced by :class:`Gcra` objects the scheduler builds and re-rates itself when a
queue changes mode. :class:`QueueThrottles` are *extra* throttle objects a daemon may attach
to a queue (``Scheduler.configure``): a throttle object given to several queues is shared by
them (a cluster-wide limit kept in Redis, for instance).

**The burst rule.** A :class:`Gcra` (generic cell rate algorithm, ITU-T I.371; the "virtual
scheduling" form) with rate ``count/seconds`` spaces units ``seconds/count`` apart: 5000/h lets
one recipient go every 0.72 s, never a whole hour's budget in the first second. ``burst``
(default 1) is how many units may go back to back after a quiet period. In any window of
``W`` seconds a GCRA lets at most ``burst + W·count/seconds`` single units through. A request
for ``n > 1`` units at once (a transaction with several recipients, a message of many bytes)
is let through whole when the limiter is not behind, and then costs ``n`` intervals before
the next: the window bound grows by ``n − 1`` for that one request, and the long-run rate is
exact.

Public names: Throttle, QueueThrottles, NO_THROTTLES, RateLimit, Gcra, DEFAULT_BURST,
limiter, slower.
``RateLimit`` and ``Gcra`` raise ``ValueError`` for a non-positive count, period or burst.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "DEFAULT_BURST",
    "NO_THROTTLES",
    "Gcra",
    "QueueThrottles",
    "RateLimit",
    "Throttle",
    "limiter",
    "slower",
]

#: Units that may go back to back after a quiet period: 1, so that ``max-msg-rate 5000/h``
#: means one message every 0.72 s (the issue's "no burst of a whole hour's budget in the
#: first second"; KumoMTA's throttles also spread a rate evenly over its period).
DEFAULT_BURST = 1


class Throttle(Protocol):
    """A limit on how fast something may happen."""

    def try_take(self, now: float, n: int) -> float | None:
        """Take ``n`` units at ``now`` and return None, or take nothing and return the
        earliest epoch time at which ``n`` units may be available."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueThrottles:
    """Extra throttles one queue must pass: all of ``connect`` per new connection, all of
    ``message`` per recipient handed to a connection, all of ``volume`` per byte of each
    message handed to a connection (``Scheduler.add(..., size=)``)."""

    connect: tuple[Throttle, ...] = ()
    message: tuple[Throttle, ...] = ()
    volume: tuple[Throttle, ...] = ()


#: No extra throttles at all.
NO_THROTTLES = QueueThrottles()


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """``count`` units per ``seconds`` (config ``N/[M]unit``: ``3/5m`` is count=3,
    seconds=300), with ``burst`` units allowed back to back."""

    count: int
    seconds: float
    burst: int = DEFAULT_BURST

    def __post_init__(self) -> None:
        if self.count <= 0 or not self.seconds > 0 or self.burst < 1:
            raise ValueError("a rate needs count > 0, seconds > 0 and burst >= 1")

    @classmethod
    def per_hour(cls, count: int) -> RateLimit:
        """``count``/h (the seed's ``max-msg-per-hour N``)."""
        return cls(count=count, seconds=3600.0)

    @property
    def interval(self) -> float:
        """Seconds between two units at this rate."""
        return self.seconds / self.count

    def __str__(self) -> str:
        for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
            if self.seconds == size:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.seconds:g}s"


def slower(a: RateLimit | None, b: RateLimit | None) -> RateLimit | None:
    """The stricter of two rates (None = unlimited)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a.interval >= b.interval else b


#: Wake-up lateness the limiter forgives per unit, as a fraction of its interval (Sluice's
#: choice). Timers fire a fraction of a millisecond late on an idle loop, but a busy loop
#: wakes a few milliseconds late, and under a scaled clock (``--time-scale 180``) a real
#: millisecond is 0.18 s of scheduler time: a fixed allowance would be eaten and every late
#: wake-up would push all later units back (250/s measured ~225/s at the receiver).
LATENESS_FRACTION = 0.5


class Gcra:
    """A smooth rate limiter: at most ``burst + W·count/seconds`` units in any ``W`` seconds.

    Keeps one number, the theoretical arrival time (TAT) of the next unit. A request at
    ``now`` conforms when ``now >= TAT − (burst − 1)·interval``; it then moves TAT to
    ``TAT + n·interval`` when it is at most ``slack`` late (else ``now + n·interval``), where
    ``slack`` (:data:`LATENESS_FRACTION` of the interval) absorbs the lateness of the
    caller's wake-up: without it every late wake-up would push all later units back, so
    50/s measured 48.2/s at the receiver. The price is that a window of ``W`` seconds may
    hold ``burst + (W + slack)·count/seconds`` units: at most half a unit more.
    :meth:`set_rate` changes the rate in place (see there).
    """

    __slots__ = ("_interval", "_tat", "_tau", "rate")

    def __init__(self, rate: RateLimit) -> None:
        self._tat = float("-inf")
        self.rate = rate
        self._interval = rate.interval
        self._tau = (rate.burst - 1) * rate.interval

    def set_rate(self, rate: RateLimit) -> None:
        """Change the rate at once: the next unit may go one *new* interval after the last
        one (as if the last unit had been taken at the new rate); earlier units keep
        counting, so a queue entering backoff never gains a fresh burst."""
        if rate != self.rate:
            self._tat += rate.interval - self._interval
            self.rate = rate
            self._interval = rate.interval
            self._tau = (rate.burst - 1) * rate.interval

    def available_at(self, now: float) -> float | None:
        """None if a request may go at ``now``, else the earliest time it may."""
        at = self._tat - self._tau
        return None if now >= at else at

    def lateness(self, now: float) -> float:
        """How long a unit has been free to go at ``now`` (negative: not yet free)."""
        return now - self._tat

    def take(self, now: float, n: int) -> None:
        """Take ``n`` units unconditionally (after :meth:`available_at` said yes)."""
        slack = LATENESS_FRACTION * self._interval
        # Late by at most ``slack``: keep the schedule; idle longer: start from now (no credit).
        base = self._tat if now - self._tat <= slack else now
        self._tat = base + n * self._interval

    def try_take(self, now: float, n: int) -> float | None:
        """The :class:`Throttle` protocol."""
        at = self.available_at(now)
        if at is None:
            self.take(now, n)
        return at


def limiter(gcra: Gcra | None, rate: RateLimit | None) -> Gcra | None:
    """A limiter for ``rate``: None for no limit, else ``gcra`` re-rated, or a new one."""
    if rate is None:
        return None
    if gcra is None:
        return Gcra(rate)
    gcra.set_rate(rate)
    return gcra
