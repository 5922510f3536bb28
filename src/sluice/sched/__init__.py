"""sluice.sched: the scheduler core, pure — queues, retries, expiry, limits; decisions only.

The daemon feeds it mail and outcomes and carries out the decisions it returns; time is
passed in as ``now`` (epoch seconds) and randomness is an injected ``RandomSource``. See
``docs/scheduler.md`` for the model and :mod:`sluice.sched.planner` for the entry point.

Public names: Scheduler; QueueSettings, BackoffSettings; Outcome, OutcomeKind, Scope, Result;
the actions Connect, Deliver, Transaction, Close, CloseReason, Delivered, Defer, Bounce,
BounceReason, Removed, Wake, Action; QueueMode, Limits; QueueSnapshot, QueueEvent,
EventType; Throttle, QueueThrottles; TimeQ, Ready, Sleep, Empty; RandomSource, FixedRandom;
SchedulerError (raised on contract violations).
"""

from __future__ import annotations

from sluice.sched.actions import (
    Action,
    Bounce,
    BounceReason,
    Close,
    CloseReason,
    Connect,
    Defer,
    Deliver,
    Delivered,
    Removed,
    Transaction,
    Wake,
)
from sluice.sched.backoff import Limits, QueueMode, effective_limits
from sluice.sched.clock import FixedRandom, RandomSource
from sluice.sched.errors import SchedulerError
from sluice.sched.outcome import Outcome, OutcomeKind, Result, Scope
from sluice.sched.planner import Scheduler
from sluice.sched.queues import EventType, QueueEvent, QueueSnapshot
from sluice.sched.settings import DEFAULT_SETTINGS, BackoffSettings, QueueSettings
from sluice.sched.throttle import NO_THROTTLES, QueueThrottles, Throttle
from sluice.sched.timeq import EMPTY, Empty, Ready, Sleep, TimeQ

__all__ = [
    "DEFAULT_SETTINGS",
    "EMPTY",
    "NO_THROTTLES",
    "Action",
    "BackoffSettings",
    "Bounce",
    "BounceReason",
    "Close",
    "CloseReason",
    "Connect",
    "Defer",
    "Deliver",
    "Delivered",
    "Empty",
    "EventType",
    "FixedRandom",
    "Limits",
    "Outcome",
    "OutcomeKind",
    "QueueEvent",
    "QueueMode",
    "QueueSettings",
    "QueueSnapshot",
    "QueueThrottles",
    "RandomSource",
    "Ready",
    "Removed",
    "Result",
    "Scheduler",
    "SchedulerError",
    "Scope",
    "Sleep",
    "Throttle",
    "TimeQ",
    "Transaction",
    "Wake",
    "effective_limits",
]
