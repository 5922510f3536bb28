"""``max-cpu-usage``: from CPU samples, decide whether Sluice may open deliveries and accept
injections (the seed's ``<max-cpu-usage>90</max-cpu-usage>``; not a PowerMTA directive).

The daemon measures CPU (busy time over elapsed time, across the process's cores, as a
fraction in [0, 1]) every second or so and feeds each sample with its time to
:meth:`CpuGate.sample`. The gate smooths the samples (an exponentially weighted average with a
time constant of :data:`DEFAULT_SMOOTHING` seconds, so one busy second does not stop the
server) and applies **hysteresis**: it closes when the smoothed load reaches the limit and opens
again only when it has fallen :data:`DEFAULT_HYSTERESIS` points below it, so it does not flap
around the threshold. While closed, the daemon calls ``Scheduler.hold_connections(True)`` (no
new connections; those open finish their work) and answers new injections with
:data:`REFUSAL_REPLY` (SMTP ``451 4.3.2`` to a new transaction, ``421 4.3.2`` to a new
connection; HTTP 503), and logs each change that :meth:`CpuGate.sample` reports.

Public names: CpuGate, DEFAULT_SMOOTHING, DEFAULT_HYSTERESIS, REFUSAL_REPLY. ``CpuGate``
raises ``ValueError`` for a limit outside (0, 100], a negative hysteresis or smoothing.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_HYSTERESIS", "DEFAULT_SMOOTHING", "REFUSAL_REPLY", "CpuGate"]

#: Time constant of the load average, seconds: long enough that a one-second spike (a DKIM key
#: load, a burst of TLS handshakes) does not stop delivery, short enough to react within a few
#: seconds of sustained overload (Sluice's choice; Unix load averages use 60 s, too slow here).
DEFAULT_SMOOTHING = 5.0
#: Percentage points below the limit at which the gate opens again (Sluice's choice: 90 %
#: closes, 80 % reopens).
DEFAULT_HYSTERESIS = 10.0
#: What an injection is told while the gate is closed: RFC 3463 4.3.2 "system not accepting
#: network messages" (RFC 5321 §4.2.5: 451 at a transaction, 421 at connection time).
REFUSAL_REPLY = (451, "4.3.2", "System busy, try again later")


class CpuGate:
    """Decides from CPU samples whether new work may start (see the module docstring)."""

    __slots__ = ("_at", "_closed", "_load", "hysteresis", "limit", "smoothing")

    def __init__(
        self,
        limit_percent: float,
        *,
        hysteresis: float = DEFAULT_HYSTERESIS,
        smoothing: float = DEFAULT_SMOOTHING,
    ) -> None:
        if not 0 < limit_percent <= 100 or hysteresis < 0 or smoothing < 0:
            raise ValueError("limit in (0, 100], hysteresis >= 0, smoothing >= 0")
        self.limit = float(limit_percent)
        self.hysteresis = float(hysteresis)
        self.smoothing = float(smoothing)
        self._load: float | None = None
        self._at = 0.0
        self._closed = False

    @property
    def load(self) -> float:
        """The smoothed CPU load, percent (0 before the first sample)."""
        return 0.0 if self._load is None else self._load

    @property
    def may_deliver(self) -> bool:
        """May new delivery connections be opened?"""
        return not self._closed

    @property
    def may_accept(self) -> bool:
        """May new injections be accepted?"""
        return not self._closed

    def sample(self, now: float, busy: float) -> bool | None:
        """Feed one sample (``busy`` in [0, 1], clamped) taken at ``now``. Returns the new
        state when it changed — True: now overloaded, False: load fell back — else None."""
        percent = 100.0 * min(1.0, max(0.0, busy))
        if self._load is None or self.smoothing == 0:
            self._load = percent
        else:
            dt = max(0.0, now - self._at)
            alpha = 1.0 - math.exp(-dt / self.smoothing)
            self._load += alpha * (percent - self._load)
        self._at = now
        if not self._closed and self._load >= self.limit:
            self._closed = True
            return True
        if self._closed and self._load < self.limit - self.hysteresis:
            self._closed = False
            return False
        return None
