"""How many connections a queue may have right now, given how its destination behaves.

This is the dead-site detection and concurrency feedback of Postfix's qmgr
(``qmgr_feedback.c``), reduced to three rules:

* **Retry mode (dead site).** A site-scope failure — a connection that could not be
  established while no other connection of the queue is open, a DNS failure, a failure at
  the greeting — puts the queue into *retry mode* (PowerMTA's term) until
  ``now + retry delay``; the n-th consecutive site failure uses the n-th ``retry-after``
  entry (jittered). In retry mode the queue opens no connections at all. When the time comes,
  exactly **one** probe connection is allowed; when it opens, the queue is healthy again and
  may use its full connection cap; when it fails, retry mode starts again with the next delay.
  A dead destination therefore costs at most one connection attempt per retry wave (after
  the first wave, which is bounded by ``max-smtp-out``), and never holds another queue's slots.
* **Window.** A failed connect while other connections of the queue are open means the site
  accepts fewer connections than we tried: the queue's window drops to the number open. Each
  delivered transaction grows it by ``1/window`` (additive increase, one more connection per
  window's worth of deliveries) until it reaches the cap again.
* **Session failures.** :data:`SESSION_FAILURES_TO_RETRY_MODE` session failures in a row with
  nothing delivered in between count as a site failure, so a destination that drops every
  session cannot make the queue reconnect forever without ever deferring anyone.

Public names: SiteHealth, SESSION_FAILURES_TO_RETRY_MODE. Nothing here raises.
"""

from __future__ import annotations

import math

__all__ = ["SESSION_FAILURES_TO_RETRY_MODE", "SiteHealth"]

#: Consecutive session-scope failures (no delivery between) that put a queue into retry mode.
#: Postfix's default ``smtp_..._destination_concurrency_failed_cohort_limit`` is 1 for whole
#: connection cohorts; sessions that did connect get a little more benefit of the doubt.
SESSION_FAILURES_TO_RETRY_MODE = 3


class SiteHealth:
    """Retry mode, probe and connection window of one queue."""

    __slots__ = ("failures", "probing", "retry_until", "session_failures", "window")

    def __init__(self) -> None:
        #: End of retry mode (epoch seconds); 0.0 when not in retry mode.
        self.retry_until = 0.0
        #: Consecutive site failures (selects the retry-after entry).
        self.failures = 0
        #: True between the end of retry mode and the first connection that opens.
        self.probing = False
        #: Connection window; ``inf`` means "no reduction below the cap".
        self.window = math.inf
        self.session_failures = 0

    def in_retry_mode(self, now: float) -> bool:
        """True while the queue must open no connection; ends retry mode when it is over."""
        if self.retry_until == 0.0:
            return False
        if now < self.retry_until:
            return True
        self.retry_until = 0.0
        self.probing = True
        return False

    def cap(self, limit: int) -> int:
        """Connections allowed now, given the queue's configured ``limit``."""
        if self.probing:
            return min(1, limit)
        if self.window < limit:
            return max(1, int(self.window))
        return limit

    def enter_retry_mode(self, until: float) -> None:
        """A site failure: no connections until ``until``."""
        self.failures += 1
        self.retry_until = until
        self.probing = False
        self.session_failures = 0

    def connect_failed(self, open_count: int) -> bool:
        """A connection attempt failed; True if that makes the site dead (retry mode)."""
        if self.probing or open_count == 0:
            return True
        self.window = float(open_count)
        return False

    def opened(self) -> None:
        """A connection opened: the site is alive (this also ends a retry mode that a sibling
        connection's failure started)."""
        self.probing = False
        self.failures = 0
        self.retry_until = 0.0

    def delivered(self, limit: int) -> None:
        """A report delivered at least one recipient; ``limit`` is the queue's cap."""
        self.session_failures = 0
        if self.window != math.inf:
            self.window += 1.0 / self.window
            if self.window >= limit:
                self.window = math.inf

    def session_failed(self) -> bool:
        """A session failure; True when enough in a row make the site dead."""
        self.session_failures += 1
        return self.session_failures >= SESSION_FAILURES_TO_RETRY_MODE
