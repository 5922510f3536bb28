"""What the scheduler does with news from delivery: connections opened, failed or closed,
and the outcome of each recipient of each transaction (Postfix ``smtp_trouble.c`` scopes).
Every reply text is first run through the queue's reply rules (:mod:`sluice.sched._shaping`),
so a backoff decided by a reply already governs the fate of that same report.

Public names: none (Feedback is a base of :class:`~sluice.sched.planner.Scheduler`, whose
methods ``connection_opened``, ``connection_failed``, ``connection_closed`` and ``report``
are defined here). They raise SchedulerError for unknown connections, connections in the
wrong state, and reports about recipients not in flight on that connection.
"""

from __future__ import annotations

from collections.abc import Iterable

from sluice.sched._shaping import Shaping
from sluice.sched.actions import (
    Action,
    BounceReason,
    CloseReason,
    Defer,
    Delivered,
    Removed,
)
from sluice.sched.backoff import QueueMode
from sluice.sched.errors import SchedulerError
from sluice.sched.outcome import Outcome, OutcomeKind, Result, Scope
from sluice.sched.queues import (
    CONNECTING,
    GONE,
    OPEN,
    Conn,
    Entry,
    EventType,
    ScheduledQueue,
    rcpt_tuple,
)
from sluice.sched.retry import next_attempt

__all__ = ["Feedback"]

_PER_RECIPIENT = (Scope.RECIPIENT, Scope.MESSAGE)


class Feedback(Shaping):
    """Connection events and per-recipient outcomes, fed back into the queues."""

    # ---- connection events ------------------------------------------------------------

    def connection_opened(self, connection_id: int, now: float) -> None:
        """The connection from ``Connect`` is ready for transactions."""
        conn = self._conn(connection_id)
        if conn.state != CONNECTING:
            raise SchedulerError(f"connection {connection_id} is not connecting")
        q = conn.queue
        conn.state = OPEN
        q.connecting -= 1
        q.health.opened()
        self._make_idle(conn, now)

    def connection_failed(self, connection_id: int, outcome: Outcome, now: float) -> list[Action]:
        """The connection from ``Connect`` could not be established (``outcome`` says why:
        transient — refused, timeout, DNS SERVFAIL, 4xx greeting — or permanent — NXDOMAIN,
        null MX, 5xx greeting, which bounce the queue's ready and deferred recipients)."""
        conn = self._conn(connection_id)
        if conn.state != CONNECTING:
            raise SchedulerError(f"connection {connection_id} is not connecting")
        q = conn.queue
        self._forget(conn)
        q.event(now, EventType.CONNECT_FAILED, outcome.text)
        actions: list[Action] = []
        if q.settings.reply_rules:
            self._observe(q, conn, outcome.text, now, actions)
        if outcome.kind is OutcomeKind.PERMANENT:
            for entry in q.drain_ready() + q.drain_waiting():
                actions.append(self._bounce(q, entry, BounceReason.PERMANENT, now, outcome.text))
        elif q.health.connect_failed(q.open_connections()):
            self._site_failed(q, outcome, now, actions)
        self._dirty[q] = None
        return actions

    def connection_closed(self, connection_id: int, now: float) -> list[Action]:
        """The connection is gone (after ``Close``, or the peer hung up). Transactions still in
        flight on it were not tried: they return to the ready set with no penalty."""
        conn = self._conn(connection_id)
        q = conn.queue
        actions: list[Action] = []
        untried: list[Entry] = []
        for entry in conn.in_flight:
            q.n_in_flight -= len(entry.rcpts)
            if entry.state == GONE:
                actions.append(Removed(queue=q.name, msg_id=entry.msg_id, rcpts=entry.rcpts))
            else:
                untried.append(entry)
        q.requeue(untried)
        conn.in_flight = []
        self._forget(conn)
        self._dirty[q] = None
        return actions

    # ---- outcomes ---------------------------------------------------------------------

    def report(self, connection_id: int, results: Iterable[Result], now: float) -> list[Action]:
        """Outcomes of transactions run on ``connection_id``.

        Every transaction named in ``results`` is finished: its recipients not named are
        treated as not tried (back to the ready set). Transactions not named stay in flight
        for a later report. The returned actions record each recipient's fate and may close
        the connection (session/site failure, max-errors, max-msg, over the cap, paused).
        """
        conn = self._conn(connection_id)
        if conn.state == CONNECTING:
            raise SchedulerError(f"connection {connection_id} has not opened")
        q = conn.queue
        results = list(results)
        by_rcpt = {(e.msg_id, r): e for e in conn.in_flight for r in e.rcpts}
        reported: dict[Entry, dict[Outcome, list[int]]] = {}
        for result in results:
            for r in result.rcpts:
                entry = by_rcpt.pop((result.msg_id, r), None)
                if entry is None:
                    raise SchedulerError(
                        f"recipient {result.msg_id}/{r} is not in flight on connection "
                        f"{connection_id} (or reported twice)"
                    )
                reported.setdefault(entry, {}).setdefault(result.outcome, []).append(r)
        if not reported:
            return []
        conn.in_flight = [e for e in conn.in_flight if e not in reported]
        actions: list[Action] = []
        if q.settings.reply_rules:
            seen: set[str] = set()
            for result in results:
                text = result.outcome.text
                if text not in seen:
                    seen.add(text)
                    self._observe(q, conn, text, now, actions)
        delivered_text = ""
        site: Outcome | None = None
        session: Outcome | None = None
        delivered = False
        errors = 0
        untried: list[Entry] = []
        for entry, outcomes in reported.items():
            q.n_in_flight -= len(entry.rcpts)
            done: set[int] = set()
            for outcome, rcpts in outcomes.items():
                done.update(rcpts)
                part = entry.part(rcpt_tuple(rcpts))
                kind = outcome.kind
                if kind is OutcomeKind.DELIVERED:
                    delivered = True
                    delivered_text = outcome.text
                    actions.append(
                        Delivered(
                            queue=q.name, msg_id=part.msg_id, rcpts=part.rcpts, text=outcome.text
                        )
                    )
                    continue
                if outcome.scope is Scope.SITE:
                    site = outcome
                elif outcome.scope is Scope.SESSION:
                    session = outcome
                if entry.state == GONE:
                    actions.append(Removed(queue=q.name, msg_id=part.msg_id, rcpts=part.rcpts))
                elif kind is OutcomeKind.TRANSIENT and outcome.scope is Scope.SESSION:
                    untried.append(part)  # not tried: no penalty
                else:
                    errors += len(part.rcpts)
                    actions.append(self._fail(q, part, outcome, now))
            if len(done) < len(entry.rcpts):
                rest = entry.part(tuple(r for r in entry.rcpts if r not in done))
                if entry.state == GONE:
                    actions.append(Removed(queue=q.name, msg_id=rest.msg_id, rcpts=rest.rcpts))
                else:
                    untried.append(rest)
        q.requeue(untried)
        conn.errors += errors
        if delivered and q.mode is QueueMode.BACKOFF:
            self._delivered_in_backoff(q, conn, now, delivered_text, actions)
        self._after_report(
            conn, q, now, delivered=delivered, site=site, session=session, actions=actions
        )
        return actions

    def _fail(self, q: ScheduledQueue, entry: Entry, outcome: Outcome, now: float) -> Action:
        """Decide the fate of recipients that failed: bounce now, or defer until when."""
        if outcome.kind is OutcomeKind.PERMANENT:
            return self._bounce(q, entry, BounceReason.PERMANENT, now, outcome.text)
        if q.settings.bounce_on_4xx and outcome.scope in _PER_RECIPIENT:
            return self._bounce(q, entry, BounceReason.BOUNCE_ON_4XX, now, outcome.text)
        attempts = entry.attempts + 1
        due = next_attempt(
            now=now,
            arrival=entry.arrival,
            attempts=attempts,
            retry_after=q.limits.retry_after,
            settings=q.settings,
            rng=self._rng,
        )
        if due is None:
            return self._bounce(q, entry, BounceReason.EXPIRED, now, outcome.text)
        entry.attempts = attempts
        q.push_waiting(entry, due)
        self._wake(q, entry.due)
        q.event(now, EventType.DEFERRED, outcome.text)
        return Defer(
            queue=q.name,
            msg_id=entry.msg_id,
            rcpts=entry.rcpts,
            attempts=attempts,
            next_attempt=entry.due,
            text=outcome.text,
        )

    def _after_report(
        self,
        conn: Conn,
        q: ScheduledQueue,
        now: float,
        *,
        delivered: bool,
        site: Outcome | None,
        session: Outcome | None,
        actions: list[Action],
    ) -> None:
        """Feedback to the queue's health, and whether this connection goes on."""
        self._dirty[q] = None
        if delivered:
            q.health.delivered(q.limits.max_smtp_out)
        if site is not None:
            self._site_failed(q, site, now, actions)
            self._close(conn, CloseReason.RETRY_MODE, actions)
            return
        if session is not None:
            q.event(now, EventType.SESSION_FAILED, session.text)
            if q.health.session_failed():
                self._site_failed(q, session, now, actions)
            self._close(conn, CloseReason.SESSION_ERROR, actions)
            return
        limit = q.settings.max_errors_per_connection
        if limit and conn.errors >= limit:
            self._close(conn, CloseReason.MAX_ERRORS, actions)
            return
        if conn.in_flight or conn.state != OPEN:
            return
        limit = q.settings.max_msg_per_connection
        if limit and conn.msgs >= limit:
            self._close(conn, CloseReason.MAX_MSG, actions)
        elif q.active_connections() - q.closing > q.limits.max_smtp_out:
            self._close(conn, CloseReason.OVER_LIMIT, actions)
        elif self._source_off(conn):
            self._close(conn, CloseReason.SOURCE_DISABLED, actions)
        else:
            self._make_idle(conn, now)
