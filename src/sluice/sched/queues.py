"""The scheduled queue of one ``domain/vmta``: its recipients, connections and recent events.

A :class:`ScheduledQueue` holds *entries*: one per (message, group of recipients of that
message with the same schedule). A new single-recipient message is one entry; a message's
recipients split into several entries only when their fates differ (450 / 550 / 250 in one
transaction). Entries are small slotted objects holding ints and floats (target: well under
200 bytes per queued recipient including containers; ``bench/bench_sched.py`` measures it).

An entry is in exactly one place: the **ready** deque (may be sent now, FIFO), the **waiting**
:class:`~sluice.sched.timeq.TimeQ` (deferred until its ``due`` time) or **in flight** on a
connection. The queue keeps recipient counts for each place, its connections, its
:class:`~sluice.sched.concurrency.SiteHealth`, its mode and backoff triggers, the rate
limiters built from its limits (re-rated in place when the limits change), the source IPs a
reply rule disabled, and the last events for the monitor.

This module is bookkeeping only; the decisions are made in :mod:`sluice.sched.planner`.

Public names: ScheduledQueue, QueueEvent, EventType, QueueSnapshot, EVENTS_PER_QUEUE.
Nothing here raises.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from sluice.sched.actions import CloseReason
from sluice.sched.backoff import BackoffState, Limits, QueueMode, effective_limits
from sluice.sched.concurrency import SiteHealth
from sluice.sched.settings import QueueSettings
from sluice.sched.sources import SourceIp
from sluice.sched.throttle import NO_THROTTLES, Gcra, QueueThrottles, RateLimit, limiter
from sluice.sched.timeq import Ready, TimeQ

__all__ = ["EVENTS_PER_QUEUE", "EventType", "QueueEvent", "QueueSnapshot", "ScheduledQueue"]

#: Events kept per queue for the monitor (PowerMTA's ``show topqueues`` shows the last few).
EVENTS_PER_QUEUE = 10

# Where an entry is (small ints: cached by CPython, no per-entry object).
READY = 0
WAITING = 1
IN_FLIGHT = 2
#: Deleted by an operator while in flight: its results are reported as Removed.
GONE = 3

# Where a connection is.
CONNECTING = 0
OPEN = 1
CLOSING = 2

#: Interned one-recipient tuples: most messages have one recipient, and its index is small.
_ONE_RCPT: dict[int, tuple[int, ...]] = {i: (i,) for i in range(64)}


def rcpt_tuple(rcpts: Sequence[int]) -> tuple[int, ...]:
    """``rcpts`` as a tuple, sharing the common one-element tuples."""
    if len(rcpts) == 1:
        one = _ONE_RCPT.get(rcpts[0])
        if one is not None:
            return one
    return tuple(rcpts)


class Entry:
    """Recipients of one message in one queue that share a schedule."""

    __slots__ = ("arrival", "attempts", "due", "msg_id", "rcpts", "size", "state")

    def __init__(
        self,
        msg_id: int,
        rcpts: tuple[int, ...],
        attempts: int,
        due: float,
        arrival: float,
        *,
        size: int = 0,
    ) -> None:
        self.msg_id = msg_id
        self.rcpts = rcpts
        self.attempts = attempts
        #: When it may be sent (epoch seconds, as rounded by the TimeQ).
        self.due = due
        self.arrival = arrival
        #: Message size in bytes (for ``max-data-volume-rate``; 0 if unknown).
        self.size = size
        self.state = READY

    def part(self, rcpts: tuple[int, ...]) -> Entry:
        """This entry if ``rcpts`` are all its recipients, else a new entry for ``rcpts``."""
        if len(rcpts) == len(self.rcpts):
            return self
        return Entry(
            self.msg_id, rcpt_tuple(rcpts), self.attempts, self.due, self.arrival, size=self.size
        )


class Conn:
    """One connection of a queue, as the scheduler sees it."""

    __slots__ = (
        "close_reason",
        "epoch",
        "errors",
        "id",
        "idle_since",
        "in_flight",
        "msgs",
        "queue",
        "source",
        "state",
    )

    def __init__(self, conn_id: int, queue: ScheduledQueue, source: SourceIp | None = None) -> None:
        self.id = conn_id
        self.queue = queue
        #: The source IP it connects from (None: delivery's choice).
        self.source = source
        #: The queue's backoff epoch when it was last given work (-1: given in normal mode).
        self.epoch = -1
        self.state = CONNECTING
        self.in_flight: list[Entry] = []
        #: Transactions handed to it so far (max-msg-per-connection).
        self.msgs = 0
        #: Recipients that failed on it so far (max-errors-per-connection).
        self.errors = 0
        self.idle_since = 0.0
        #: Set when it must take no more work and close once idle.
        self.close_reason: CloseReason | None = None


class EventType(enum.Enum):
    """What happened to a queue (the monitor's ``event[i].type``)."""

    #: A connection attempt failed.
    CONNECT_FAILED = "connect-failed"
    #: The queue entered retry mode after a site failure.
    RETRY_MODE = "retry-mode"
    #: A session ended with a session-scope failure.
    SESSION_FAILED = "session-failed"
    #: Recipients were deferred.
    DEFERRED = "deferred"
    #: Recipients bounced (permanent failure or bounce-on-4xx).
    BOUNCED = "bounced"
    #: Recipients bounced because they reached bounce-after.
    EXPIRED = "expired"
    #: Operator commands and mode changes.
    PAUSED = "paused"
    RESUMED = "resumed"
    SCHEDULED = "scheduled"
    DELETED = "deleted"
    MODE = "mode"
    #: A reply rule matched while the queue was already where it sends it (timer restarted).
    RULE = "rule"
    #: A reply rule disabled a source IP for the queue; it was enabled again.
    SOURCE_DISABLED = "source-disabled"
    SOURCE_ENABLED = "source-enabled"
    #: Waiting mail moved to another VMTA (``backoff-reroute-to-virtual-mta``).
    REROUTED = "rerouted"


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueEvent:
    """One event: when, what, the reply or command text, and the action taken."""

    time: float
    type: EventType
    text: str
    #: What the scheduler did about it ("mode=backoff max-smtp-out=5 …"), or "".
    action: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSnapshot:
    """A read-only picture of one queue for the monitor, CLI and API."""

    name: str
    mode: QueueMode
    paused: bool
    priority: int
    #: Recipients held by the queue: ready + deferred + in flight.
    recipients: int
    ready: int
    deferred: int
    in_flight: int
    #: Connections open (busy or idle) and being opened.
    connections: int
    connecting: int
    #: End of retry mode, or None when not in retry mode.
    retry_mode_until: float | None
    #: Earliest time a deferred recipient comes due, or None.
    next_retry: float | None
    #: The last events, oldest first.
    events: tuple[QueueEvent, ...]
    #: The limits in force now (mode and backoff triggers applied).
    limits: Limits | None = None
    #: When backoff ends by itself (None: not in backoff, or only by delivery/command).
    backoff_until: float | None = None
    #: Source IPs a reply rule disabled for this queue, with when they come back (inf: never).
    disabled_sources: tuple[tuple[str | None, float], ...] = ()


class ScheduledQueue:
    """Recipients, connections, health and events of one queue."""

    __slots__ = (
        "backoff",
        "closing",
        "connect_after",
        "connect_gcra",
        "connecting",
        "conns",
        "disabled",
        "events",
        "health",
        "idle",
        "lagging",
        "limits",
        "mode",
        "msg_gcra",
        "n_in_flight",
        "n_ready",
        "n_waiting",
        "name",
        "paused",
        "rampup_gcra",
        "ready",
        "replacements",
        "rr",
        "send_after",
        "settings",
        "source_blocked",
        "starved_seq",
        "throttles",
        "volume_gcra",
        "waiting",
        "wake_at",
    )

    def __init__(self, name: str, settings: QueueSettings) -> None:
        self.name = name
        self.settings = settings
        self.mode = QueueMode.NORMAL
        self.backoff = BackoffState()
        self.msg_gcra: Gcra | None = None
        self.connect_gcra: Gcra | None = None
        self.volume_gcra: Gcra | None = None
        self.rampup_gcra: Gcra | None = None
        self.limits: Limits = effective_limits(settings, self.mode)
        self._sync_limiters()
        self.throttles: QueueThrottles = NO_THROTTLES
        #: Source address (None: the unnamed one) → when a reply rule's disable ends.
        self.disabled: dict[str | None, float] = {}
        #: Round-robin position in ``settings.sources``.
        self.rr = 0
        #: Set when every usable source was at its connection cap at the last try.
        self.source_blocked = False
        self.paused = settings.paused
        self.ready: deque[Entry] = deque()
        self.waiting: TimeQ[Entry] = TimeQ()
        # Recipient counts per place.
        self.n_ready = 0
        self.n_waiting = 0
        self.n_in_flight = 0
        self.conns: dict[int, Conn] = {}
        #: Open connections with nothing in flight and no close pending, oldest first.
        self.idle: dict[int, Conn] = {}
        self.connecting = 0
        self.closing = 0
        self.health = SiteHealth()
        self.events: deque[QueueEvent] = deque(maxlen=EVENTS_PER_QUEUE)
        #: Time of the earliest wake-up registered for this queue (inf: none).
        self.wake_at = math.inf
        #: Order in which it started waiting for a global connection slot (0: not waiting).
        self.starved_seq = 0
        #: A connect throttle said "not before": no Connect until then.
        self.connect_after = 0.0
        #: A message throttle said "not before": no Deliver until then.
        self.send_after = 0.0
        #: Connections closed after ``max-msg-per-connection`` and not yet replaced.
        self.replacements = 0
        #: A message went a whole rate interval later than the rate allowed (no connection
        #: was free for it): the connections, not the rate, hold the queue back.
        self.lagging = False

    # ---- settings ---------------------------------------------------------------------

    def apply(self, settings: QueueSettings, mode: QueueMode) -> None:
        """New settings (reload), a new mode or new backoff triggers: recompute the limits in
        force and re-rate the limiters (keeping what they have counted)."""
        self.settings = settings
        self.mode = mode
        self.limits = effective_limits(settings, mode, self.backoff.triggers)
        self._sync_limiters()

    def _sync_limiters(self) -> None:
        limits = self.limits
        self.msg_gcra = limiter(self.msg_gcra, limits.max_msg_rate)
        self.connect_gcra = limiter(self.connect_gcra, limits.max_connect_rate)
        self.volume_gcra = limiter(self.volume_gcra, limits.max_data_volume_rate)
        rampup = self.settings.smtp_out_rampup_interval
        self.rampup_gcra = limiter(
            self.rampup_gcra, RateLimit(count=1, seconds=rampup) if rampup > 0 else None
        )

    # ---- entries ----------------------------------------------------------------------

    def push_ready(self, entry: Entry, *, front: bool = False) -> None:
        entry.state = READY
        if front:
            self.ready.appendleft(entry)
        else:
            self.ready.append(entry)
        self.n_ready += len(entry.rcpts)

    def requeue(self, entries: list[Entry]) -> None:
        """Put untried entries back at the front of the ready set, in their order."""
        for entry in reversed(entries):
            self.push_ready(entry, front=True)

    def push_waiting(self, entry: Entry, due: float) -> None:
        entry.state = WAITING
        entry.due = self.waiting.push(due, entry)
        self.n_waiting += len(entry.rcpts)

    def pop_due(self, now: float) -> list[Entry]:
        """Waiting entries whose time has come (taken out of the waiting count)."""
        popped = self.waiting.pop_due(now)
        if not isinstance(popped, Ready):
            return []
        out = []
        for entry in popped.items:
            # Skip stale references: rescheduled (later due) or moved elsewhere.
            if entry.state == WAITING and entry.due <= now:
                self.n_waiting -= len(entry.rcpts)
                entry.state = READY
                out.append(entry)
        return out

    def drain_waiting(self) -> list[Entry]:
        """Every waiting entry, due or not (schedule-now, delete, bounce-all)."""
        out = []
        for entry in self.waiting.drain():
            if entry.state == WAITING:
                self.n_waiting -= len(entry.rcpts)
                entry.state = READY
                out.append(entry)
        return out

    def drain_ready(self) -> list[Entry]:
        out = list(self.ready)
        self.ready.clear()
        self.n_ready = 0
        return out

    def pop_ready(self) -> Entry:
        entry = self.ready.popleft()
        self.n_ready -= len(entry.rcpts)
        return entry

    # ---- connections ------------------------------------------------------------------

    def active_connections(self) -> int:
        """Connections that count against the cap: opening, open, and closing."""
        return len(self.conns)

    def open_connections(self) -> int:
        return len(self.conns) - self.connecting - self.closing

    # ---- monitor ----------------------------------------------------------------------

    def event(self, now: float, kind: EventType, text: str, action: str = "") -> None:
        self.events.append(QueueEvent(time=now, type=kind, text=text, action=action))

    def snapshot(self) -> QueueSnapshot:
        retry_until = self.health.retry_until
        return QueueSnapshot(
            name=self.name,
            mode=self.mode,
            paused=self.paused,
            priority=self.settings.queue_priority,
            recipients=self.n_ready + self.n_waiting + self.n_in_flight,
            ready=self.n_ready,
            deferred=self.n_waiting,
            in_flight=self.n_in_flight,
            connections=len(self.conns) - self.connecting,
            connecting=self.connecting,
            retry_mode_until=retry_until if retry_until else None,
            next_retry=self.waiting.next_due(),
            events=tuple(self.events),
            limits=self.limits,
            backoff_until=self.backoff.until(),
            disabled_sources=tuple(self.disabled.items()),
        )
