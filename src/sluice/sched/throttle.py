"""Rate limits the planner asks before it connects or hands out work.

The scheduler core knows rate limits only through the small :class:`Throttle` protocol: before
each ``Connect`` it asks the queue's connect throttles for one unit, and before each
``Deliver`` it asks the queue's message throttles for one unit per recipient. A throttle that
refuses returns the time at which the request could succeed; the planner then leaves the
queue alone until that time (it registers a wake-up) and other queues are unaffected.

A throttle object may be shared by several queues: giving every queue that sends from one
source IP the same object is how a per-source-IP limit (``source-ip-max-msg-rate``) applies
across queues.

EXTENSION POINT (shaping issue): the GCRA / token-bucket implementations of ``max-msg-rate``,
``max-connect-rate``, ``max-data-volume-rate`` and their ``source-ip-*`` and ``backoff-*``
variants go in this module; the planner needs no change to use them.

Public names: Throttle, QueueThrottles, NO_THROTTLES. Nothing here raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["NO_THROTTLES", "QueueThrottles", "Throttle"]


class Throttle(Protocol):
    """A limit on how fast something may happen."""

    def try_take(self, now: float, n: int) -> float | None:
        """Take ``n`` units at ``now`` and return None, or take nothing and return the
        earliest epoch time at which ``n`` units may be available."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueThrottles:
    """The throttles one queue must pass: all of ``connect`` per new connection, all of
    ``message`` per recipient handed to a connection."""

    connect: tuple[Throttle, ...] = ()
    message: tuple[Throttle, ...] = ()


#: No rate limits at all.
NO_THROTTLES = QueueThrottles()
