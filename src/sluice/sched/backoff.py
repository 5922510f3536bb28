"""Queue modes (normal / backoff) and the limits in force in each mode.

PowerMTA keeps every queue in mode ``normal`` or ``backoff`` (powermta.md §3.1); in backoff the
``backoff-*`` directives replace the normal limits. The scheduler core reads every limit it
enforces through :func:`effective_limits`, so switching a queue's mode (``Scheduler.set_mode``)
changes its connection cap and retry list at once: connections above the new cap take no new
work and are closed when their current transaction is reported.

EXTENSION POINT (shaping issue): the machine that *decides* the mode — ``<smtp-pattern-list>``
rules, ``backoff-to-normal-after``, ``backoff-to-normal-after-delivery`` — belongs here, as a
pure object fed the :class:`~sluice.sched.outcome.Outcome` texts that ``Scheduler.report`` and
``Scheduler.connection_failed`` see; it returns mode changes the scheduler applies with
``set_mode``. Rate overrides (``backoff-max-msg-rate`` …) join :class:`Limits`.

Public names: QueueMode, Limits, effective_limits. Nothing here raises.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sluice.sched.settings import QueueSettings

__all__ = ["Limits", "QueueMode", "effective_limits"]


class QueueMode(enum.Enum):
    """A queue's sending mode (PowerMTA ``mode=normal|backoff``)."""

    #: Normal limits apply.
    NORMAL = "normal"
    #: The ``backoff-*`` limits apply.
    BACKOFF = "backoff"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The limits a queue is held to right now (its settings, seen through its mode)."""

    max_smtp_out: int
    retry_after: tuple[float, ...]


def effective_limits(settings: QueueSettings, mode: QueueMode) -> Limits:
    """The limits in force for ``settings`` in ``mode``."""
    if mode is QueueMode.BACKOFF:
        b = settings.backoff
        return Limits(
            max_smtp_out=settings.max_smtp_out if b.max_smtp_out is None else b.max_smtp_out,
            retry_after=settings.retry_after if b.retry_after is None else b.retry_after,
        )
    return Limits(max_smtp_out=settings.max_smtp_out, retry_after=settings.retry_after)
