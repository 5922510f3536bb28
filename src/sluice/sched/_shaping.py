"""Traffic shaping inside the scheduler (private): reply rules, the backoff machine, source IPs
and the rate limiters consulted before each connection and each transaction.

:class:`Shaping` sits between :class:`~sluice.sched._state.SchedulerState` and
:class:`~sluice.sched._feedback.Feedback`. ``report`` and ``connection_failed`` call
:meth:`Shaping._observe` with every reply text they see, so the daemon never has to call
anything extra: the first matching rule acts within the same call (limits lowered at once,
idle connections above the new cap closed, a source IP disabled). :meth:`Shaping._upkeep`
runs when the planner looks at a queue: backoff triggers lapse, disabled sources come back,
and waiting mail leaves a backing-off queue that reroutes.

Public names: limiter_wait (a helper the planner shares); Shaping (a base of
:class:`~sluice.sched.planner.Scheduler`, whose ``set_mode``, ``observe_reply`` and
``hold_connections`` are defined here). ``observe_reply``
raises SchedulerError for an unknown connection.
"""

from __future__ import annotations

import math

from sluice.sched._state import SchedulerState
from sluice.sched.actions import (
    Action,
    CloseReason,
    ModeChanged,
    Reroute,
    SourceDisabled,
)
from sluice.sched.backoff import ALL_SOURCES_DISABLED, COMMAND, Limits, QueueMode, Trigger
from sluice.sched.queues import Conn, Entry, EventType, ScheduledQueue
from sluice.sched.rules import first_match
from sluice.sched.sources import SourceIp, SourceState
from sluice.sched.throttle import Gcra, Throttle

__all__ = ["Shaping", "limiter_wait"]

#: A message that goes this many rate intervals (exclusive) to this many (inclusive) later
#: than its rate allowed, with more work ready, waited for a connection: the queue may grow
#: (Sluice's choice). Less is wake-up jitter; more means the queue was idle, not short of
#: connections.
LAG_MIN = 1.0
LAG_MAX = 4.0


class Shaping(SchedulerState):
    """Reply rules, backoff, source IPs and rate limiters."""

    # ---- public commands --------------------------------------------------------------

    def set_mode(self, queue: str, mode: QueueMode, now: float, reason: str = "") -> list[Action]:
        """Switch the queue to ``mode`` (``set queue --mode``): its limits change at once;
        idle connections above the new cap close (the returned ``Close`` actions), busy ones
        take no new work and close when their current work is reported. A commanded backoff
        lasts ``backoff-to-normal-after`` (default: until ``set_mode(NORMAL)``, a
        ``mode=normal`` rule or a delivery if so configured)."""
        q = self.queue(queue)
        text = reason or f"mode={mode.value}"
        actions: list[Action] = []
        if mode is QueueMode.BACKOFF:
            if q.mode is QueueMode.BACKOFF:
                q.backoff.hold(COMMAND, now, q.settings.backoff.to_normal_after)
                self._wake_lapse(q)
                q.apply(q.settings, q.mode)
                q.event(now, EventType.MODE, text, "backoff extended by command")
            else:
                self._hold_backoff(
                    q,
                    COMMAND,
                    duration=q.settings.backoff.to_normal_after,
                    now=now,
                    text=text,
                    actions=actions,
                )
        elif q.mode is QueueMode.BACKOFF:
            self._to_normal(q, now, text, actions)
        self._dirty[q] = None
        return actions

    def observe_reply(self, connection_id: int, text: str, now: float) -> list[Action]:
        """Run the queue's reply rules on a reply that neither ``report`` nor
        ``connection_failed`` carries (a 421 to QUIT, say). Returns ``ModeChanged``,
        ``SourceDisabled`` and ``Close`` actions."""
        conn = self._conn(connection_id)
        actions: list[Action] = []
        self._observe(conn.queue, conn, text, now, actions)
        return actions

    def hold_connections(self, held: bool) -> None:
        """While held (``max-cpu-usage`` exceeded), ``plan`` opens no new connections; the
        queues that wanted one get them, by priority, once released."""
        self._held = held
        if not held:
            for q in self._starved:
                self._dirty[q] = None

    # ---- reply rules ------------------------------------------------------------------

    def _observe(
        self, q: ScheduledQueue, conn: Conn | None, text: str, now: float, actions: list[Action]
    ) -> bool:
        """Apply the first of ``q``'s reply rules that matches ``text``; True if one did."""
        rule = first_match(q.settings.reply_rules, text)
        if rule is None:
            return False
        if rule.mode == "backoff":
            duration = rule.to_normal_after
            if duration is None:
                duration = q.settings.backoff.to_normal_after
            self._hold_backoff(q, rule, duration=duration, now=now, text=text, actions=actions)
        elif rule.mode == "normal" and q.mode is QueueMode.BACKOFF:
            self._to_normal(q, now, text, actions)
        elif not rule.disable_source_ip:
            q.event(now, EventType.RULE, text, rule.describe())
        if rule.disable_source_ip:
            reenable = rule.reenable_after
            if reenable is None:
                reenable = q.settings.reenable_source_ip_after
            source = conn.source if conn is not None else None
            self._disable_source(
                q, source, until=now + reenable, text=text, now=now, actions=actions
            )
        self._dirty[q] = None
        return True

    # ---- backoff ----------------------------------------------------------------------

    def _hold_backoff(
        self,
        q: ScheduledQueue,
        trigger: Trigger,
        *,
        duration: float,
        now: float,
        text: str,
        actions: list[Action],
    ) -> None:
        """Hold ``q`` in backoff by ``trigger`` for ``duration``; limits drop at once."""
        new = q.backoff.hold(trigger, now, duration)
        q.apply(q.settings, QueueMode.BACKOFF)
        detail = _describe(q.limits)
        until = q.backoff.until()
        if new:
            q.event(now, EventType.MODE, text, f"mode=backoff {detail}")
            actions.append(
                ModeChanged(
                    queue=q.name, mode=QueueMode.BACKOFF, until=until, text=text, detail=detail
                )
            )
        else:
            q.event(now, EventType.RULE, text, f"backoff extended {detail}")
        self._wake_lapse(q)
        self._close_over_cap(q, actions)
        self._dirty[q] = None

    def _to_normal(self, q: ScheduledQueue, now: float, text: str, actions: list[Action]) -> None:
        q.backoff.clear()
        q.apply(q.settings, QueueMode.NORMAL)
        detail = _describe(q.limits)
        q.event(now, EventType.MODE, text, f"mode=normal {detail}")
        actions.append(
            ModeChanged(queue=q.name, mode=QueueMode.NORMAL, until=None, text=text, detail=detail)
        )
        self._dirty[q] = None

    def _wake_lapse(self, q: ScheduledQueue) -> None:
        at = q.backoff.next_lapse()
        if at is not None:
            self._wake(q, at)

    def _close_over_cap(self, q: ScheduledQueue, actions: list[Action]) -> None:
        """Close idle connections above the cap now; busy ones close when they report."""
        for conn in list(q.idle.values()):
            if q.active_connections() - q.closing <= q.limits.max_smtp_out:
                return
            self._close(conn, CloseReason.OVER_LIMIT, actions)

    def _delivered_in_backoff(
        self, q: ScheduledQueue, conn: Conn, now: float, text: str, actions: list[Action]
    ) -> None:
        """``backoff-to-normal-after-delivery``: a transaction handed out during the current
        backoff period was delivered (one handed out before it does not count)."""
        if (
            q.mode is QueueMode.BACKOFF
            and q.settings.backoff.to_normal_after_delivery
            and conn.epoch == q.backoff.epoch
        ):
            self._to_normal(q, now, text or "delivered", actions)

    # ---- source IPs -------------------------------------------------------------------

    def _source_state(self, source: SourceIp) -> SourceState:
        state = self._sources.get(source.key)
        if state is None:
            state = self._sources[source.key] = SourceState()
        state.sync(source)
        return state

    def _disable_source(
        self,
        q: ScheduledQueue,
        source: SourceIp | None,
        *,
        until: float,
        text: str,
        now: float,
        actions: list[Action],
    ) -> None:
        address = None if source is None else source.address
        q.disabled[address] = max(until, q.disabled.get(address, 0.0))
        shown = None if until == math.inf else until
        q.event(now, EventType.SOURCE_DISABLED, text, f"disable-source-ip {address or '*'}")
        actions.append(SourceDisabled(queue=q.name, source=address, until=shown, text=text))
        if until != math.inf:
            self._wake(q, until)
        for conn in list(q.idle.values()):
            if self._source_off(conn):
                self._close(conn, CloseReason.SOURCE_DISABLED, actions)
        if q.settings.backoff.upon_all_sources_disabled and self._all_disabled(q):
            self._hold_backoff(
                q,
                ALL_SOURCES_DISABLED,
                duration=q.settings.backoff.to_normal_after,
                now=now,
                text=text,
                actions=actions,
            )

    def _all_disabled(self, q: ScheduledQueue) -> bool:
        sources = q.settings.sources
        if not sources:
            return None in q.disabled
        return all(s.address in q.disabled for s in sources)

    def _source_off(self, conn: Conn) -> bool:
        """True if the connection's source is disabled for its queue."""
        disabled = conn.queue.disabled
        if not disabled:
            return False
        return (None if conn.source is None else conn.source.address) in disabled

    def _choose_source(self, q: ScheduledQueue, now: float) -> tuple[bool, SourceIp | None]:
        """The source for a new connection: ``(True, source)`` (None: delivery chooses) or
        ``(False, None)`` when none may be used now (a wake-up or a slot waiter is set)."""
        sources = q.settings.sources
        if not sources:
            if None in q.disabled:
                q.source_blocked = True
                return False, None
            return True, None
        n = len(sources)
        earliest = math.inf
        for k in range(n):
            source = sources[(q.rr + k) % n]
            if source.address in q.disabled:
                continue
            state = self._source_state(source)
            if source.max_smtp_out and state.conns >= source.max_smtp_out:
                state.waiters[q] = None
                continue
            at = limiter_wait(now, state.connect, state.message, state.volume)
            if at is not None:
                earliest = min(earliest, at)
                continue
            q.rr = (q.rr + k + 1) % n
            return True, source
        q.source_blocked = True
        if earliest != math.inf:
            self._wake(q, earliest)
        return False, None

    # ---- rate limiters ----------------------------------------------------------------

    def _connect_permit(self, q: ScheduledQueue, now: float) -> tuple[float | None, Conn | None]:
        """Pass every connect limit of ``q`` for one new connection: ``(None, conn)`` with
        the connection made, or ``(not_before, None)``; ``(None, None)`` when no source may
        be used now."""
        at = limiter_wait(now, q.connect_gcra, q.rampup_gcra)
        if at is not None:
            return at, None
        q.source_blocked = False
        ok, source = self._choose_source(q, now)
        if not ok:
            return None, None
        if q.throttles.connect:
            at = _take(q.throttles.connect, now, 1)
            if at is not None:
                return at, None
        for gcra in (q.connect_gcra, q.rampup_gcra):
            if gcra is not None:
                gcra.take(now, 1)
        conn = Conn(next(self._conn_ids), q, source)
        if source is not None:
            state = self._source_state(source)
            state.conns += 1
            if state.connect is not None:
                state.connect.take(now, 1)
        return None, conn

    def _send_permit(
        self, q: ScheduledQueue, conn: Conn, entry: Entry, now: float
    ) -> tuple[float, bool] | None:
        """Pass every message and volume limit for ``entry`` on ``conn``: None when taken,
        else ``(not_before, queue_wide)`` — queue_wide False means only this connection's
        source is behind. Nothing is taken unless everything passes (our own limiters are
        asked first and only then charged; an external throttle that refuses after another
        external one said yes costs that one a unit, never a limit overrun)."""
        n = len(entry.rcpts)
        size = entry.size
        at = limiter_wait(now, q.msg_gcra, q.volume_gcra if size else None)
        if at is not None:
            return at, True
        state = None if conn.source is None else self._source_state(conn.source)
        if state is not None:
            at = limiter_wait(now, state.message, state.volume if size else None)
            if at is not None:
                return at, False
        external = q.throttles
        if external.message:
            at = _take(external.message, now, n)
            if at is not None:
                return at, True
        if external.volume and size:
            at = _take(external.volume, now, size)
            if at is not None:
                return at, True
        if q.msg_gcra is not None:
            if q.ready and LAG_MIN < q.msg_gcra.lateness(now) / q.msg_gcra.rate.interval <= LAG_MAX:
                q.lagging = True
            q.msg_gcra.take(now, n)
        if size and q.volume_gcra is not None:
            q.volume_gcra.take(now, size)
        if state is not None:
            if state.message is not None:
                state.message.take(now, n)
            if size and state.volume is not None:
                state.volume.take(now, size)
        return None

    def _limited_sends(self, q: ScheduledQueue, conn: Conn) -> bool:
        """True when sends on ``conn`` pass a rate limiter (one transaction per Deliver)."""
        if q.msg_gcra or q.volume_gcra or q.throttles.message or q.throttles.volume:
            return True
        source = conn.source
        return source is not None and bool(source.max_msg_rate or source.max_data_volume_rate)

    # ---- upkeep -----------------------------------------------------------------------

    def _upkeep(self, q: ScheduledQueue, now: float, actions: list[Action]) -> None:
        """Timers of the shaping state: backoff triggers lapse, sources come back, a
        backing-off queue with a reroute target hands its waiting mail over."""
        backoff = q.backoff
        if backoff.triggers:
            if backoff.lapse(now):
                if backoff.triggers:
                    q.apply(q.settings, q.mode)
                    q.event(now, EventType.RULE, "a backoff rule lapsed", _describe(q.limits))
                else:
                    self._to_normal(q, now, "backoff-to-normal-after", actions)
            self._wake_lapse(q)
        if q.disabled:
            for address, until in list(q.disabled.items()):
                if until <= now:
                    del q.disabled[address]
                    q.event(now, EventType.SOURCE_ENABLED, f"source {address or '*'} enabled")
                elif until != math.inf:
                    self._wake(q, until)
        to = q.settings.backoff.reroute_to_vmta
        if to and q.mode is QueueMode.BACKOFF and (q.ready or len(q.waiting)):
            moved = 0
            for entry in q.drain_ready() + q.drain_waiting():
                moved += len(entry.rcpts)
                actions.append(
                    Reroute(
                        queue=q.name,
                        to_vmta=to,
                        msg_id=entry.msg_id,
                        rcpts=entry.rcpts,
                        arrival=entry.arrival,
                        attempts=entry.attempts,
                        next_attempt=entry.due if entry.due > now else None,
                    )
                )
            if moved:
                q.event(now, EventType.REROUTED, f"{moved} recipients", f"reroute to {to}")


def limiter_wait(now: float, *limiters: Gcra | None) -> float | None:
    """The latest "not before" among ``limiters`` (None: all would let a request go now)."""
    at: float | None = None
    for gcra in limiters:
        if gcra is not None:
            t = gcra.available_at(now)
            if t is not None and (at is None or t > at):
                at = t
    return at


def _take(throttles: tuple[Throttle, ...], now: float, n: int) -> float | None:
    """Ask each external throttle for ``n`` units; the first refusal's time, or None."""
    for throttle in throttles:
        later = throttle.try_take(now, n)
        if later is not None:
            return later
    return None


def _describe(limits: Limits) -> str:
    parts = [f"max-smtp-out={limits.max_smtp_out}"]
    if limits.max_msg_rate is not None:
        parts.append(f"max-msg-rate={limits.max_msg_rate}")
    if limits.max_connect_rate is not None:
        parts.append(f"max-connect-rate={limits.max_connect_rate}")
    if limits.max_data_volume_rate is not None:
        parts.append(f"max-data-volume-rate={limits.max_data_volume_rate}")
    return " ".join(parts)
