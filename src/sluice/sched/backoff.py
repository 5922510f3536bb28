"""Queue modes (normal / backoff), the limits in force in each, and the backoff timers.

PowerMTA keeps every queue in mode ``normal`` or ``backoff`` (powermta.md §3.1); in backoff the
``backoff-*`` directives replace the normal limits. The scheduler reads every limit it enforces
through :func:`effective_limits`, so a mode change alters the connection cap, the retry list
and the rates at once: connections above the new cap take no new work and close when their
current transaction is reported, and the message, connect and volume limiters are re-rated in
place (units already taken keep counting: entering backoff never grants a fresh burst).

**What holds a queue in backoff** is a set of *triggers*, each with its own end time
(:class:`BackoffState`): a matching reply rule (its own ``backoff-to-normal-after`` or the
queue's), an operator command, or "every source disabled". The limits in backoff are the
strictest over the active triggers — a rule's own ``max_smtp_out`` / ``max_msg_rate`` (the
seed's ``421 RP-001 *, 1h, 5, 1000``), else the queue's ``backoff-max-smtp-out`` /
``backoff-max-msg-rate`` — and never looser than the normal limits. **A rule that matches
again while it holds the queue restarts its timer** (PowerMTA-like: every new 421 extends the
backoff period); a second rule adds its own trigger, so its limits apply too until it lapses.
The queue returns to normal when every trigger has lapsed, on a ``mode=normal`` rule, on the
first delivery of a transaction handed out in backoff (``backoff-to-normal-after-delivery``),
or by command.

Public names: QueueMode, Limits, effective_limits, BackoffState, Trigger, COMMAND,
ALL_SOURCES_DISABLED. Nothing here raises.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

from sluice.sched.rules import ReplyRule
from sluice.sched.settings import QueueSettings
from sluice.sched.throttle import RateLimit, slower

__all__ = [
    "ALL_SOURCES_DISABLED",
    "COMMAND",
    "BackoffState",
    "Limits",
    "QueueMode",
    "Trigger",
    "effective_limits",
]


class QueueMode(enum.Enum):
    """A queue's sending mode (PowerMTA ``mode=normal|backoff``)."""

    #: Normal limits apply.
    NORMAL = "normal"
    #: The ``backoff-*`` limits apply.
    BACKOFF = "backoff"


#: The trigger of ``set_mode(BACKOFF)`` (``pmta set queue --mode=backoff``).
COMMAND = "command"
#: The trigger of ``backoff-upon-all-sources-disabled``.
ALL_SOURCES_DISABLED = "all-sources-disabled"

#: What holds a queue in backoff: a reply rule or one of the named causes above.
Trigger = ReplyRule | str


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The limits a queue is held to right now (its settings, seen through its mode)."""

    max_smtp_out: int
    retry_after: tuple[float, ...]
    max_msg_rate: RateLimit | None = None
    max_connect_rate: RateLimit | None = None
    max_data_volume_rate: RateLimit | None = None


def effective_limits(
    settings: QueueSettings, mode: QueueMode, triggers: Iterable[Trigger] = ()
) -> Limits:
    """The limits in force for ``settings`` in ``mode`` while ``triggers`` hold it there."""
    if mode is not QueueMode.BACKOFF:
        return Limits(
            max_smtp_out=settings.max_smtp_out,
            retry_after=settings.retry_after,
            max_msg_rate=settings.max_msg_rate,
            max_connect_rate=settings.max_connect_rate,
            max_data_volume_rate=settings.max_data_volume_rate,
        )
    b = settings.backoff
    cap_default = settings.max_smtp_out if b.max_smtp_out is None else b.max_smtp_out
    rate_default = settings.max_msg_rate if b.max_msg_rate is None else b.max_msg_rate
    cap = cap_default
    rate: RateLimit | None = None
    any_trigger = False
    for trigger in triggers:
        own_cap = own_rate = None
        if isinstance(trigger, ReplyRule):
            own_cap, own_rate = trigger.max_smtp_out, trigger.max_msg_rate
        if not any_trigger:
            cap = cap_default if own_cap is None else own_cap
            rate = rate_default if own_rate is None else own_rate
            any_trigger = True
        else:
            cap = min(cap, cap_default if own_cap is None else own_cap)
            rate = slower(rate, rate_default if own_rate is None else own_rate)
    if not any_trigger:
        rate = rate_default
    connect = b.max_connect_rate or settings.max_connect_rate
    volume = b.max_data_volume_rate or settings.max_data_volume_rate
    return Limits(
        max_smtp_out=min(cap, settings.max_smtp_out),
        retry_after=settings.retry_after if b.retry_after is None else b.retry_after,
        max_msg_rate=slower(rate, settings.max_msg_rate),
        max_connect_rate=slower(connect, settings.max_connect_rate),
        max_data_volume_rate=slower(volume, settings.max_data_volume_rate),
    )


class BackoffState:
    """The triggers holding one queue in backoff, each with the time it lapses."""

    __slots__ = ("epoch", "since", "triggers")

    def __init__(self) -> None:
        #: Trigger → end time (``inf``: until something else ends the backoff).
        self.triggers: dict[Trigger, float] = {}
        #: When the current backoff period began (0.0: not in backoff).
        self.since = 0.0
        #: Counts backoff periods, so a connection knows in which one it was given work.
        self.epoch = 0

    @property
    def active(self) -> bool:
        return bool(self.triggers)

    def hold(self, trigger: Trigger, now: float, duration: float) -> bool:
        """Hold the queue in backoff by ``trigger`` until ``now + duration`` (restarting
        that trigger's timer); True when this starts a new backoff period."""
        new = not self.triggers
        if new:
            self.since = now
            self.epoch += 1
        self.triggers[trigger] = now + duration
        return new

    def lapse(self, now: float) -> bool:
        """Drop the triggers whose time has come; True if some were dropped."""
        gone = [t for t, until in self.triggers.items() if until <= now]
        for t in gone:
            del self.triggers[t]
        return bool(gone)

    def clear(self) -> None:
        self.triggers.clear()
        self.since = 0.0

    def next_lapse(self) -> float | None:
        """When the next trigger lapses (None: none will by itself)."""
        at = min(self.triggers.values(), default=math.inf)
        return None if at == math.inf else at

    def until(self) -> float | None:
        """When the backoff ends if nothing else happens (None: not in backoff or never)."""
        if not self.triggers:
            return None
        at = max(self.triggers.values())
        return None if at == math.inf else at
