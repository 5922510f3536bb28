"""The scheduler's state and the bookkeeping every decision shares (private).

:class:`SchedulerState` holds the queues, connections, timers and the injected random source;
its helpers close connections, register wake-ups, bounce entries and put a queue into retry
mode. :mod:`sluice.sched._feedback` adds what happens when outcomes come back and
:mod:`sluice.sched.planner` what to do next; :class:`~sluice.sched.planner.Scheduler` is the
public class.

Public names: none (SchedulerState is internal). Raises SchedulerError for unknown connections.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from sluice.sched.actions import Action, Bounce, BounceReason, Close, CloseReason
from sluice.sched.clock import RandomSource
from sluice.sched.errors import SchedulerError
from sluice.sched.outcome import Outcome
from sluice.sched.queues import CLOSING, CONNECTING, Conn, Entry, EventType, ScheduledQueue
from sluice.sched.retry import jittered
from sluice.sched.settings import DEFAULT_SETTINGS, QueueSettings
from sluice.sched.sources import SourceState
from sluice.sched.timeq import TimeQ

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_RECOVERY_SPREAD", "SchedulerState"]

#: Most transactions handed to one connection in one ``Deliver``. Small enough that one slow
#: connection never sits on much of a queue, large enough that the plan/report round trip is
#: paid once per several messages (Postfix's qmgr hands a delivery agent one message with up
#: to ``*_destination_recipient_limit`` recipients; we batch messages instead).
DEFAULT_MAX_BATCH = 10
#: Deferred mail recovered after a restart whose retry time passed while we were down is
#: spread uniformly over this many seconds instead of being released at once (KumoMTA's
#: "synchronized retry stampede"; test-plan §4).
DEFAULT_RECOVERY_SPREAD = 300.0
#: Resolution of the queues' wake-up times: 1/1024 s. Rate limiters hand out "not before"
#: times 0.72 s apart (5000/h); rounding those up to whole seconds would cut such a rate by
#: a quarter. A power of two keeps the bucket arithmetic exact in binary floating point, so a
#: wake-up at the returned time always finds its bucket due.
WAKE_RESOLUTION = 1.0 / 1024


def _defaults(_queue: str) -> QueueSettings:
    return DEFAULT_SETTINGS


class SchedulerState:
    """Queues, connections and timers, with the helpers decisions share."""

    def __init__(
        self,
        *,
        rng: RandomSource,
        settings_for: Callable[[str], QueueSettings] = _defaults,
        total_max_smtp_out: int = 0,
        max_batch: int = DEFAULT_MAX_BATCH,
        recovery_spread: float = DEFAULT_RECOVERY_SPREAD,
    ) -> None:
        """``settings_for(queue_name)`` resolves a new queue's settings; ``total_max_smtp_out``
        caps connections across all queues (0: no cap)."""
        if total_max_smtp_out < 0 or max_batch < 1 or recovery_spread < 0:
            raise ValueError("total_max_smtp_out >= 0, max_batch >= 1, recovery_spread >= 0")
        self._rng = rng
        self._settings_for = settings_for
        self.total_max_smtp_out = total_max_smtp_out
        self._max_batch = max_batch
        self._recovery_spread = recovery_spread
        self._queues: dict[str, ScheduledQueue] = {}
        self._conns: dict[int, Conn] = {}
        self._conn_ids = itertools.count(1)
        self._starve_seq = itertools.count(1)
        #: Queues to look at in the next plan (an ordered set).
        self._dirty: dict[ScheduledQueue, None] = {}
        #: Queues that want connections the global cap did not give them.
        self._starved: dict[ScheduledQueue, None] = {}
        #: When queues need looking at again (retries due, retry mode over, throttles).
        self._wakeq: TimeQ[ScheduledQueue] = TimeQ(WAKE_RESOLUTION)
        #: Shared state of each source key (address, group): connections and limiters.
        self._sources: dict[tuple[str, str], SourceState] = {}
        #: True while new connections are held back (``hold_connections``).
        self._held = False
        #: Highest priority among starved queues at the start of the current plan (-1: none).
        self._top_starved = -1
        #: When idle connections time out.
        self._idleq: TimeQ[Conn] = TimeQ()

    def queue(self, name: str) -> ScheduledQueue:
        """The queue called ``name``, created with ``settings_for(name)`` if new."""
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = ScheduledQueue(name, self._settings_for(name))
        return q

    def _conn(self, connection_id: int) -> Conn:
        conn = self._conns.get(connection_id)
        if conn is None:
            raise SchedulerError(f"unknown connection {connection_id}")
        return conn

    def _wake(self, q: ScheduledQueue, at: float) -> None:
        if at < q.wake_at:
            q.wake_at = self._wakeq.push(at, q)

    def _bounce(
        self, q: ScheduledQueue, entry: Entry, reason: BounceReason, now: float, text: str
    ) -> Bounce:
        if reason is BounceReason.EXPIRED:
            text = text or f"expired: undelivered after {q.settings.bounce_after:g}s in queue"
            q.event(now, EventType.EXPIRED, text)
        else:
            q.event(now, EventType.BOUNCED, text)
        return Bounce(
            queue=q.name, msg_id=entry.msg_id, rcpts=entry.rcpts, reason=reason, text=text
        )

    def _make_idle(self, conn: Conn, now: float) -> None:
        q = conn.queue
        conn.idle_since = now
        q.idle[conn.id] = conn
        timeout = q.settings.connection_idle_timeout
        if timeout > 0:
            self._idleq.push(now + timeout, conn)
        self._dirty[q] = None

    def _idle_out(self, q: ScheduledQueue, now: float, actions: list[Action]) -> None:
        """Close idle connections that have waited ``connection_idle_timeout`` for work."""
        timeout = q.settings.connection_idle_timeout
        for conn in list(q.idle.values()):
            if conn.idle_since + timeout <= now:
                self._close(conn, CloseReason.IDLE, actions)

    def _close_idle(self, q: ScheduledQueue, reason: CloseReason, actions: list[Action]) -> None:
        for conn in list(q.idle.values()):
            self._close(conn, reason, actions)

    def _close(self, conn: Conn, reason: CloseReason, actions: list[Action]) -> None:
        if conn.state == CLOSING:
            return
        q = conn.queue
        q.idle.pop(conn.id, None)
        conn.state = CLOSING
        conn.close_reason = reason
        q.closing += 1
        if reason is CloseReason.MAX_MSG:
            q.replacements += 1
        actions.append(Close(queue=q.name, connection_id=conn.id, reason=reason))

    def _forget(self, conn: Conn) -> None:
        q = conn.queue
        del self._conns[conn.id]
        del q.conns[conn.id]
        q.idle.pop(conn.id, None)
        if conn.state == CONNECTING:
            q.connecting -= 1
        elif conn.state == CLOSING:
            q.closing -= 1
        if conn.source is not None:
            state = self._sources.get(conn.source.key)
            if state is not None:
                state.conns -= 1
                for waiter in state.waiters:
                    self._dirty[waiter] = None
                state.waiters.clear()

    def _site_failed(
        self, q: ScheduledQueue, outcome: Outcome, now: float, actions: list[Action]
    ) -> None:
        """Put ``q`` into retry mode (unless it already is) and bounce what has expired."""
        if q.health.retry_until > now:
            return
        if outcome.dns_error:
            delay = jittered(q.settings.retry_after_dns_error, q.settings.jitter, self._rng)
        else:
            retry = q.limits.retry_after
            base = retry[min(q.health.failures, len(retry) - 1)]
            delay = jittered(base, q.settings.jitter, self._rng)
        until = self._wakeq.round_up(now + delay)
        q.health.enter_retry_mode(until)
        q.event(now, EventType.RETRY_MODE, outcome.text)
        self._wake(q, until)
        expiry_age = q.settings.bounce_after
        if any(now >= e.arrival + expiry_age for e in q.ready):
            for entry in q.drain_ready():
                if now >= entry.arrival + expiry_age:
                    actions.append(self._bounce(q, entry, BounceReason.EXPIRED, now, outcome.text))
                else:
                    q.push_ready(entry)
        self._dirty[q] = None
