"""sluice.sched: the scheduler core, pure — queues, retries, expiry, limits; decisions only.

The daemon feeds it mail and outcomes and carries out the decisions it returns; time is
passed in as ``now`` (epoch seconds) and randomness is an injected ``RandomSource``. See
``docs/scheduler.md`` for the model, ``docs/shaping.md`` for rates, backoff and warm-up, and
:mod:`sluice.sched.planner` for the entry point.

Public names: Scheduler; QueueSettings, BackoffSettings, NEVER; Outcome, OutcomeKind, Scope,
Result; the actions Connect, Deliver, Transaction, Close, CloseReason, Delivered, Defer,
Bounce, BounceReason, Removed, Wake, ModeChanged, SourceDisabled, Reroute, Action; QueueMode,
Limits; QueueSnapshot, QueueEvent, EventType; Throttle, QueueThrottles, RateLimit, Gcra;
ReplyRule; SourceIp; CpuGate; ColdVmtaRouter, WarmupPlan, WarmupStep, WarmupState,
WarmupStatus, parse_day; TimeQ, Ready, Sleep, Empty; RandomSource, FixedRandom;
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
    ModeChanged,
    Removed,
    Reroute,
    SourceDisabled,
    Transaction,
    Wake,
)
from sluice.sched.backoff import Limits, QueueMode, effective_limits
from sluice.sched.clock import FixedRandom, RandomSource
from sluice.sched.cpu import CpuGate
from sluice.sched.errors import SchedulerError
from sluice.sched.outcome import Outcome, OutcomeKind, Result, Scope
from sluice.sched.planner import Scheduler
from sluice.sched.queues import EventType, QueueEvent, QueueSnapshot
from sluice.sched.rules import ReplyRule
from sluice.sched.settings import DEFAULT_SETTINGS, NEVER, BackoffSettings, QueueSettings
from sluice.sched.sources import SourceIp
from sluice.sched.throttle import NO_THROTTLES, Gcra, QueueThrottles, RateLimit, Throttle
from sluice.sched.timeq import EMPTY, Empty, Ready, Sleep, TimeQ
from sluice.sched.warmup import (
    ColdVmtaRouter,
    WarmupPlan,
    WarmupState,
    WarmupStatus,
    WarmupStep,
    parse_day,
)

__all__ = [
    "DEFAULT_SETTINGS",
    "EMPTY",
    "NEVER",
    "NO_THROTTLES",
    "Action",
    "BackoffSettings",
    "Bounce",
    "BounceReason",
    "Close",
    "CloseReason",
    "ColdVmtaRouter",
    "Connect",
    "CpuGate",
    "Defer",
    "Deliver",
    "Delivered",
    "Empty",
    "EventType",
    "FixedRandom",
    "Gcra",
    "Limits",
    "ModeChanged",
    "Outcome",
    "OutcomeKind",
    "QueueEvent",
    "QueueMode",
    "QueueSettings",
    "QueueSnapshot",
    "QueueThrottles",
    "RandomSource",
    "RateLimit",
    "Ready",
    "Removed",
    "ReplyRule",
    "Reroute",
    "Result",
    "Scheduler",
    "SchedulerError",
    "Scope",
    "Sleep",
    "SourceDisabled",
    "SourceIp",
    "Throttle",
    "TimeQ",
    "Transaction",
    "Wake",
    "WarmupPlan",
    "WarmupState",
    "WarmupStatus",
    "WarmupStep",
    "effective_limits",
    "parse_day",
]
