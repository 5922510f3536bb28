"""The scheduler's error: it was called in a way its contract forbids (a caller bug).

Public names: SchedulerError (a :class:`sluice.errors.SluiceError` with ``Fault.LOCAL``),
raised by :class:`~sluice.sched.planner.Scheduler` for unknown connection ids, reports about
recipients that are not in flight on that connection, and operations on connections in the
wrong state.
"""

from __future__ import annotations

from sluice.errors import Fault, SluiceError

__all__ = ["SchedulerError"]


class SchedulerError(SluiceError):
    """The scheduler was misused: a bug in the caller, never the peer's fault."""

    fault = Fault.LOCAL
