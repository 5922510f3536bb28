"""The scheduler: queues of recipients in, decisions out (Postfix's qmgr, without the I/O).

One :class:`Scheduler` per process (or per shard: it holds no global state, so intake and
delivery can be split across processes, each shard owning a disjoint set of queue names and
its share of ``total_max_smtp_out``). The daemon drives it:

* ``add`` queues recipients (new mail and mail recovered from the spool);
* ``plan(now)`` returns what to do now — ``Connect``, ``Deliver``, ``Close``, ``Bounce`` for
  expired recipients — and a ``Wake`` saying when to call ``plan`` again at the latest;
* ``connection_opened`` / ``connection_failed`` / ``connection_closed`` and ``report`` feed
  back what happened; ``report`` returns the fate of each recipient (``Delivered``, ``Defer``
  with its next attempt, ``Bounce``) and any ``Close``;
* ``pause`` / ``resume`` / ``schedule_now`` / ``delete`` / ``set_mode`` are the operator's
  commands (``pmta pause queue``, ``resume``, ``schedule``, ``delete``, ``set queue --mode``);
  ``hold_connections`` is the ``max-cpu-usage`` brake; ``observe_reply`` runs the reply rules
  on a reply no report carries.

Traffic shaping (``docs/shaping.md``): rate limiters, reply rules and the backoff machine,
source IPs and priority interruption are applied here and in :mod:`sluice.sched._shaping`;
``report`` and ``connection_failed`` run the reply rules themselves.

Planning is per queue and proportional to the work that changed: only queues touched since the
last plan (new mail, a report, a connection event, a due retry, a timer) are looked at. A queue
that is slow or dead holds only its own connection slots and its own timers, so it never delays
another queue; under the global cap, queues with a higher ``queue_priority`` get connections
first. Time is ``now``, epoch seconds (see :mod:`sluice.sched.clock`); jitter comes from the
injected ``rng``.

Public names: Scheduler, DEFAULT_MAX_BATCH, DEFAULT_RECOVERY_SPREAD. Methods raise
:class:`~sluice.sched.errors.SchedulerError` when called against their contract (unknown
connection, a report about recipients not in flight there).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from sluice.sched._feedback import Feedback
from sluice.sched._shaping import limiter_wait
from sluice.sched._state import DEFAULT_MAX_BATCH, DEFAULT_RECOVERY_SPREAD
from sluice.sched.actions import (
    Action,
    BounceReason,
    CloseReason,
    Connect,
    Deliver,
    Removed,
    Transaction,
    Wake,
)
from sluice.sched.backoff import QueueMode
from sluice.sched.queues import (
    GONE,
    IN_FLIGHT,
    Conn,
    Entry,
    EventType,
    QueueSnapshot,
    ScheduledQueue,
    rcpt_tuple,
)
from sluice.sched.settings import QueueSettings
from sluice.sched.throttle import QueueThrottles
from sluice.sched.timeq import Ready

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_RECOVERY_SPREAD", "Scheduler"]

#: A queue whose message throttle says "wait" keeps its idle connections open if the wait is
#: this short (seconds): reconnecting for every message of a rate-limited queue costs the remote
#: a connection per message; holding a connection for a long wait costs it an idle slot.
HOLD_IDLE_WHILE_THROTTLED = 10.0


class Scheduler(Feedback):
    """Queues, retries, connection limits and priorities for one process (or shard).

    ``Scheduler(rng=..., settings_for=..., total_max_smtp_out=0, max_batch=10,
    recovery_spread=300.0)``: ``rng`` gives jitter, ``settings_for(queue_name)`` resolves a
    new queue's settings, ``total_max_smtp_out`` caps connections across all queues (0: no
    cap), ``max_batch`` bounds the transactions of one ``Deliver``, ``recovery_spread`` spreads
    overdue recovered retries. Raises ``ValueError`` for negative or zero values there.
    """

    # ---- queues and settings ----------------------------------------------------------

    def queue_names(self) -> list[str]:
        return list(self._queues)

    def configure(
        self, name: str, settings: QueueSettings, throttles: QueueThrottles | None = None
    ) -> None:
        """Give queue ``name`` new settings (and throttles); takes effect at the next plan."""
        q = self.queue(name)
        q.apply(settings, q.mode)
        if throttles is not None:
            q.throttles = throttles
        if settings.paused:
            q.paused = True
        self._dirty[q] = None

    def reconfigure(self, settings_for: Callable[[str], QueueSettings]) -> None:
        """A reload: every queue, existing and future, takes its settings from ``settings_for``."""
        self._settings_for = settings_for
        for name, q in self._queues.items():
            settings = settings_for(name)
            q.apply(settings, q.mode)
            q.paused = q.paused or settings.paused
            self._dirty[q] = None

    # ---- intake -----------------------------------------------------------------------

    def add(
        self,
        queue: str,
        msg_id: int,
        rcpts: Sequence[int],
        arrival: float,
        now: float,
        *,
        attempts: int = 0,
        next_attempt: float | None = None,
        size: int = 0,
    ) -> list[Action]:
        """Queue recipients ``rcpts`` (indexes) of message ``msg_id`` that arrived at ``arrival``.

        New mail: ``attempts=0``, no ``next_attempt``. Recovered mail: the stored ``attempts``
        and ``next_attempt``; a future ``next_attempt`` is kept as it is, and a deferred
        recipient whose retry time passed while Sluice was down comes due at a random time
        within ``recovery_spread`` seconds, so a restart does not release every retry at once.
        ``size`` (bytes) is what ``max-data-volume-rate`` counts. Recipients already past
        ``bounce-after`` are returned as a ``Bounce`` (the only action ``add`` ever returns).
        """
        if not rcpts:
            return []
        q = self.queue(queue)
        settings = q.settings
        if now >= arrival + settings.bounce_after:
            entry = Entry(msg_id, rcpt_tuple(rcpts), attempts, now, arrival, size=size)
            return [self._bounce(q, entry, BounceReason.EXPIRED, now, "")]
        step = settings.max_rcpt_per_message
        if not step or len(rcpts) <= step:
            entry = Entry(msg_id, rcpt_tuple(rcpts), attempts, now, arrival, size=size)
            self._add(q, entry, now, next_attempt)
            return []
        for i in range(0, len(rcpts), step):
            part = rcpt_tuple(rcpts[i : i + step])
            self._add(q, Entry(msg_id, part, attempts, now, arrival, size=size), now, next_attempt)
        return []

    def _add(self, q: ScheduledQueue, entry: Entry, now: float, next_attempt: float | None) -> None:
        attempts = entry.attempts
        due = now
        if next_attempt is not None and next_attempt > now:
            due = next_attempt
        elif attempts > 0 and self._recovery_spread > 0:
            due = now + self._rng.random() * self._recovery_spread
        if due > now:
            q.push_waiting(entry, due)
            self._wake(q, entry.due)
        else:
            q.push_ready(entry)
            self._dirty[q] = None

    # ---- planning ---------------------------------------------------------------------

    def plan(self, now: float) -> list[Action]:
        """Everything to do at ``now``, ending with a ``Wake`` if anything is scheduled."""
        actions: list[Action] = []
        woken = self._wakeq.pop_due(now)
        if isinstance(woken, Ready):
            for q in woken.items:
                q.wake_at = math.inf
                self._dirty[q] = None
        idle = self._idleq.pop_due(now)
        if isinstance(idle, Ready):
            for conn in idle.items:
                q = conn.queue
                timeout = q.settings.connection_idle_timeout
                if q.idle.get(conn.id) is conn and conn.idle_since + timeout <= now:
                    self._close(conn, CloseReason.IDLE, actions)
        wanting: list[tuple[ScheduledQueue, int]] = []
        # Priority interruption: the highest priority among queues waiting for a global slot.
        self._top_starved = max((s.settings.queue_priority for s in self._starved), default=-1)
        dirty, self._dirty = self._dirty, {}
        for q in dirty:
            want = self._service(q, now, actions)
            if want > 0:
                wanting.append((q, want))
            else:
                self._starved.pop(q, None)
        self._grant(now, wanting, actions)
        at = self._wakeq.next_due()
        idle_at = self._idleq.next_due()
        if idle_at is not None and (at is None or idle_at < at):
            at = idle_at
        if at is not None:
            actions.append(Wake(at=at))
        return actions

    def _service(self, q: ScheduledQueue, now: float, actions: list[Action]) -> int:
        """Promote due retries, hand work to idle connections; return connections wanted."""
        if q.backoff.triggers or q.disabled or q.settings.backoff.reroute_to_vmta:
            self._upkeep(q, now, actions)
        expiry_age = q.settings.bounce_after
        for entry in q.pop_due(now):
            if now >= entry.arrival + expiry_age:
                actions.append(self._bounce(q, entry, BounceReason.EXPIRED, now, ""))
            else:
                q.push_ready(entry)
        next_due = q.waiting.next_due()
        if next_due is not None:
            self._wake(q, next_due)
        if q.paused:
            self._close_idle(q, CloseReason.PAUSED, actions)
            return 0
        if q.health.in_retry_mode(now):
            self._wake(q, q.health.retry_until)
            self._close_idle(q, CloseReason.RETRY_MODE, actions)
            return 0
        limit = q.limits.max_smtp_out
        hold = max(HOLD_IDLE_WHILE_THROTTLED, q.settings.connection_idle_timeout)
        for conn in list(q.idle.values()):
            if q.active_connections() - q.closing > limit:
                self._close(conn, CloseReason.OVER_LIMIT, actions)
            elif self._top_starved > q.settings.queue_priority and self._must_yield(q):
                self._close(conn, CloseReason.PRIORITY, actions)
            elif q.disabled and self._source_off(conn):
                self._close(conn, CloseReason.SOURCE_DISABLED, actions)
            elif not q.ready:
                break
            elif q.send_after > now:
                self._wake(q, q.send_after)
                if q.send_after - now > hold:
                    self._close(conn, CloseReason.IDLE, actions)
            else:
                wait = self._dispatch(q, conn, now, actions)
                if wait is None:
                    continue
                at, queue_wide = wait
                self._wake(q, at)
                if at - now > hold:
                    self._close(conn, CloseReason.IDLE, actions)
                if queue_wide:
                    q.send_after = at
        if not q.ready:
            q.replacements = 0
            q.lagging = False
            self._idle_out(q, now, actions)
            return 0
        if q.send_after > now:
            # The message rate, not the number of connections, is what limits the queue now:
            # more connections would only sit idle (or be opened and closed again).
            self._wake(q, q.send_after)
            return 0
        if q.connect_after > now:
            self._wake(q, q.connect_after)
            return 0
        cap = q.health.cap(limit)
        want = min(cap - q.active_connections(), len(q.ready) - q.connecting)
        if want > 0 and (q.msg_gcra is not None or q.volume_gcra is not None):
            if q.replacements > 0:
                # A connection closed after max-msg-per-connection is replaced at once
                # ("close the connection and open a new one"): it was part of the
                # concurrency the queue had grown to, and growing back one connection at a
                # time would let the rate sag below what the limit allows.
                # Not above the cap while the old connection is still closing.
                return max(0, min(want, q.replacements, cap - len(q.conns)))
            # A rate-limited queue opens a connection only when its rate would let a message
            # go now and no open connection could take it, or when a message had to wait a
            # whole rate interval for a free connection; one at a time (``burst`` at a time):
            # it grows to the concurrency its rate and the remote's speed need, not to
            # max-smtp-out.
            free_at = limiter_wait(now, q.msg_gcra, q.volume_gcra)
            if free_at is not None:
                if not q.lagging:
                    self._wake(q, free_at)
                    return 0
                want = min(want, cap - len(q.conns))
            burst = 1 if q.msg_gcra is None else q.msg_gcra.rate.burst
            want = min(want, burst - q.connecting)
        return want

    def _must_yield(self, q: ScheduledQueue) -> bool:
        """True when an idle connection of ``q`` (whose priority is below a starved queue's)
        should free its slot: every global slot is taken and ``q`` allows interruption."""
        cap = self.total_max_smtp_out
        return bool(cap) and len(self._conns) >= cap and q.settings.allow_priority_interruption

    def _dispatch(
        self, q: ScheduledQueue, conn: Conn, now: float, actions: list[Action]
    ) -> tuple[float, bool] | None:
        """Give ``conn`` a batch from the ready set; ``(not_before, queue_wide)`` if a rate
        limit said "later" (queue_wide False: only this connection's source is behind)."""
        settings = q.settings
        n = self._max_batch
        if settings.max_msg_per_connection:
            n = min(n, settings.max_msg_per_connection - conn.msgs)
        if n <= 0:
            self._close(conn, CloseReason.MAX_MSG, actions)
            return None
        limited = self._limited_sends(q, conn)
        if limited:
            n = 1
        # Share the ready work out between the idle connections.
        n = max(1, min(n, -(-len(q.ready) // len(q.idle))))
        max_rcpt = settings.max_rcpt_per_message
        expiry_age = settings.bounce_after
        batch: list[Entry] = []
        while q.ready and len(batch) < n:
            entry = q.pop_ready()
            if now >= entry.arrival + expiry_age:
                actions.append(self._bounce(q, entry, BounceReason.EXPIRED, now, ""))
                continue
            if max_rcpt and len(entry.rcpts) > max_rcpt:
                rest = Entry(
                    entry.msg_id,
                    entry.rcpts[max_rcpt:],
                    entry.attempts,
                    entry.due,
                    entry.arrival,
                    size=entry.size,
                )
                entry.rcpts = rcpt_tuple(entry.rcpts[:max_rcpt])
                q.push_ready(rest, front=True)
            batch.append(entry)
        if not batch:
            return None
        if limited:
            wait = self._send_permit(q, conn, batch[0], now)
            if wait is not None:
                q.push_ready(batch[0], front=True)
                return wait
        conn.epoch = q.backoff.epoch if q.mode is QueueMode.BACKOFF else -1
        for entry in batch:
            entry.state = IN_FLIGHT
            q.n_in_flight += len(entry.rcpts)
        conn.in_flight = batch
        conn.msgs += len(batch)
        del q.idle[conn.id]
        actions.append(
            Deliver(
                queue=q.name,
                connection_id=conn.id,
                transactions=tuple(
                    Transaction(msg_id=e.msg_id, rcpts=e.rcpts, attempts=e.attempts) for e in batch
                ),
            )
        )
        return None

    def _grant(
        self, now: float, wanting: list[tuple[ScheduledQueue, int]], actions: list[Action]
    ) -> None:
        """Open connections for the queues that want them, by priority under the global cap."""
        if self._held:
            for q, _ in wanting:
                self._starve(q)
            return
        cap = self.total_max_smtp_out
        if cap:
            free = cap - len(self._conns)
            if free <= 0:
                for q, _ in wanting:
                    self._starve(q)
                return
            if self._starved:
                seen = {q for q, _ in wanting}
                for q in list(self._starved):
                    if q not in seen:
                        want = self._service(q, now, actions)
                        if want > 0:
                            wanting.append((q, want))
                        else:
                            del self._starved[q]
            wanting.sort(key=lambda qw: (-qw[0].settings.queue_priority, qw[0].starved_seq))
        else:
            free = sum(w for _, w in wanting)
        for q, want in wanting:
            got = self._connect(q, min(want, free), now, actions)
            free -= got
            if got < want and q.connect_after <= now and not q.source_blocked:
                self._starve(q)
            else:
                self._starved.pop(q, None)
                q.starved_seq = 0

    def _starve(self, q: ScheduledQueue) -> None:
        if not q.starved_seq:
            q.starved_seq = next(self._starve_seq)
        self._starved[q] = None

    def _connect(self, q: ScheduledQueue, n: int, now: float, actions: list[Action]) -> int:
        q.source_blocked = False
        for i in range(n):
            later, conn = self._connect_permit(q, now)
            if conn is None:
                if later is not None:
                    q.connect_after = later
                    self._wake(q, later)
                return i
            q.conns[conn.id] = conn
            q.connecting += 1
            q.lagging = False
            if q.replacements:
                q.replacements -= 1
            self._conns[conn.id] = conn
            source = None if conn.source is None else conn.source.address
            actions.append(Connect(queue=q.name, connection_id=conn.id, source=source))
        return n

    # ---- operator commands ------------------------------------------------------------

    def pause(self, queue: str, now: float) -> None:
        """``pause queue``: no new deliveries; connections close when their work is done."""
        q = self.queue(queue)
        q.paused = True
        q.event(now, EventType.PAUSED, "paused by operator")
        self._dirty[q] = None

    def resume(self, queue: str, now: float) -> None:
        """``resume queue``: undo ``pause``."""
        q = self.queue(queue)
        q.paused = False
        q.event(now, EventType.RESUMED, "resumed by operator")
        self._dirty[q] = None

    def schedule_now(self, queue: str, now: float) -> None:
        """``schedule``: retry every deferred recipient now and leave retry mode."""
        q = self.queue(queue)
        for entry in q.drain_waiting():
            q.push_ready(entry)
        if q.health.retry_until:
            q.health.retry_until = 0.0
            q.health.probing = True  # one connection first: the site may still be down
        q.connect_after = q.send_after = 0.0
        q.event(now, EventType.SCHEDULED, "scheduled by operator")
        self._dirty[q] = None

    def delete(self, queue: str, now: float, msg_ids: Iterable[int] | None = None) -> list[Action]:
        """``delete``: remove the queue's recipients (or only those of ``msg_ids``). Recipients
        in flight finish their transaction; those not delivered are then reported Removed."""
        q = self._queues.get(queue)
        if q is None:
            return []
        wanted = None if msg_ids is None else set(msg_ids)
        actions: list[Action] = []
        for entry in q.drain_ready() + q.drain_waiting():
            if wanted is None or entry.msg_id in wanted:
                actions.append(Removed(queue=q.name, msg_id=entry.msg_id, rcpts=entry.rcpts))
            elif entry.due > now:
                q.push_waiting(entry, entry.due)
            else:
                q.push_ready(entry)
        for conn in q.conns.values():
            for entry in conn.in_flight:
                if wanted is None or entry.msg_id in wanted:
                    entry.state = GONE
        q.event(now, EventType.DELETED, f"{len(actions)} entries deleted by operator")
        self._dirty[q] = None
        return actions

    # ---- monitor ----------------------------------------------------------------------

    def snapshot(self, queue: str) -> QueueSnapshot | None:
        q = self._queues.get(queue)
        return None if q is None else q.snapshot()

    def snapshots(self) -> list[QueueSnapshot]:
        return [q.snapshot() for q in self._queues.values()]

    @property
    def connections(self) -> int:
        """Connections opening, open or closing, across all queues."""
        return len(self._conns)

    # ---- helpers ----------------------------------------------------------------------
