"""Outbound SMTP sessions: open one to a domain's mail host, run transfers on it, close it.

::

    opened = await open_session("example.com", settings, resolver, rng)
    if isinstance(opened, ConnectFailure):
        ... opened.outcome (TRANSIENT/PERMANENT, SITE scope), opened.fallbacks
    else:
        reports = await opened.deliver([transfer, ...])   # one TransferReport per transfer
        ... opened.is_usable, opened.idle_time, opened.messages_sent
        await opened.close()                              # QUIT, best effort

``open_session`` walks the routing plan (``routing.AttemptPlan``) through DNS, connects from
the source address with an asyncio Protocol, reads the greeting, sends EHLO (HELO when EHLO
gets a 5xx) and falls back to the next address or MX on a failed connection, a 4xx greeting
or EHLO/HELO refusal (and a 5xx one unless ``bounce-upon-5xx-greeting``).

``Session.deliver`` sends each transfer as one pipelined group (MAIL, every RCPT, DATA in one
write; a pending RSET goes first) when PIPELINING is offered, else command by command; the
content and the final dot go in one write after the 354. With PIPELINING and more than one
transfer in the call, the next transfer's group rides in that same write, behind the final
dot (RFC 2920 §3.1: content may open a group), and the dot's reply and the group's replies
are read together: one write per message instead of two. Each reply keeps its own deadline
(the dot's ``smtp-data-termination-timeout``, then the group's ``command-timeout`` from when
the dot's reply came), and the transfer riding behind a dot whose reply never came is untried.
Outcomes follow Postfix's ``smtp_trouble`` scopes and test-plan §4 on ambiguous delivery: see
docs/delivery.md.

Public names: open_session, Session. ``deliver`` raises DeliveryMisuseError when called while
another ``deliver`` runs on the same session; nothing else raises (failures are outcomes).
"""

from __future__ import annotations

from collections.abc import Sequence

from sluice.delivery._connect import greeting_text, quit_and_close, walk_plan
from sluice.delivery._prepare import Offer, Prepared, prepare
from sluice.delivery._protocol import ClientProtocol, Wait
from sluice.delivery.errors import DeliveryMisuseError
from sluice.delivery.settings import DeliverySettings
from sluice.delivery.values import (
    ConnectFailure,
    DeliveryOutcome,
    Phase,
    SessionInfo,
    Transfer,
    TransferReport,
    dot_voided,
    local_outcome,
    reply_outcome,
    route_outcome,
)
from sluice.routing import (
    AttemptPlan,
    FallbackEvent,
    Resolver,
    Rng,
    RouteFailure,
)
from sluice.sched.outcome import OutcomeKind, Result, Scope
from sluice.smtp import (
    Data,
    Event,
    LocalProtocolError,
    Reply,
    Rset,
    State,
)

__all__ = ["Session", "open_session"]

#: States in which a new transaction may begin (MAIL/RCPT: after a pending RSET).
_USABLE = (State.READY, State.MAIL, State.RCPT)
_RSET = Rset()
_DATA = Data()

T = OutcomeKind.TRANSIENT
P = OutcomeKind.PERMANENT


async def open_session(
    domain: str,
    settings: DeliverySettings,
    resolver: Resolver,
    rng: Rng,
) -> Session | ConnectFailure:
    """A greeted session to ``domain``'s mail host, or why there is none (see module doc)."""
    plan = AttemptPlan(domain, settings.route, rng)
    opened = await walk_plan(plan, settings, resolver)
    if isinstance(opened, RouteFailure):
        return ConnectFailure(
            outcome=route_outcome(opened),
            failure=opened,
            fallbacks=tuple(plan.fallbacks),
            connect_attempts=plan.connect_attempts,
        )
    proto, info = opened
    return Session(proto, info, plan, settings, resolver)


class _Staged:
    """A transfer whose group was written behind the previous transfer's final dot; its
    replies come after the dot's."""

    __slots__ = ("behind", "doubted", "prepared", "replies", "rset")

    def __init__(self, prepared: Prepared, replies: int, rset: bool) -> None:
        self.prepared = prepared
        #: How many replies the group gets (RSET, MAIL, every RCPT, DATA).
        self.replies = replies
        #: The group opens with an RSET (whose reply is not the transfer's).
        self.rset = rset
        #: The report of the transfer whose dot the group rode behind (set once it is made).
        self.behind: TransferReport | None = None
        #: ``behind`` with the dot's verdict voided, when the group's replies show the
        #: server answered out of order (set by ``Session._resume``).
        self.doubted: TransferReport | None = None


class Session:
    """A greeted SMTP connection that runs transfers (see the module docstring)."""

    __slots__ = (
        "_busy",
        "_dead",
        "_last_421",
        "_last_used",
        "_loop",
        "_need_rset",
        "_offer",
        "_plan",
        "_proto",
        "_resolver",
        "info",
        "messages_sent",
        "possible_duplicates",
        "settings",
        "transactions",
        "writes",
    )

    def __init__(
        self,
        proto: ClientProtocol,
        info: SessionInfo,
        plan: AttemptPlan,
        settings: DeliverySettings,
        resolver: Resolver,
    ) -> None:
        self._loop = proto.loop
        self.settings = settings
        self._plan = plan
        self._resolver = resolver
        self._busy = False
        #: The outcome for transfers once the session cannot be used (None while usable).
        self._dead: DeliveryOutcome | None = None
        self._last_421: Reply | None = None
        #: Transfers whose content was sent up to the final dot.
        self.messages_sent = 0
        #: Transactions begun (MAIL sent).
        self.transactions = 0
        #: Transfers that ended as possible duplicates.
        self.possible_duplicates = 0
        #: Socket writes made by ``deliver`` (each a group, or content with what rides on it).
        self.writes = 0
        self._attach(proto, info)

    def _attach(self, proto: ClientProtocol, info: SessionInfo) -> None:
        self._proto = proto
        self.info = info
        self._need_rset = False
        self._last_used = self._loop.time()
        self._offer = Offer.of(dict(info.extensions), self.settings)

    # -- state -----------------------------------------------------------------------------

    @property
    def is_usable(self) -> bool:
        """The connection is up, idle and ready for another transfer."""
        return (
            self._dead is None
            and not self._busy
            and not self._proto.closed
            and self._proto.conn.state in _USABLE
        )

    @property
    def idle_time(self) -> float:
        """Seconds since the last ``deliver`` ended (0 while one runs)."""
        return 0.0 if self._busy else self._loop.time() - self._last_used

    @property
    def pipelining(self) -> bool:
        """Transfers are sent as pipelined groups (RFC 2920) on this session."""
        return self._offer.pipelining

    # -- deliver ---------------------------------------------------------------------------

    async def deliver(self, transfers: Sequence[Transfer]) -> list[TransferReport]:
        """Run ``transfers`` in order; one report per transfer, every recipient once."""
        if self._busy:
            raise DeliveryMisuseError("deliver() is already running on this session")
        self._busy = True
        reports: list[TransferReport] = []
        last = len(transfers) - 1
        #: The group of the transfer at hand, already written behind the previous dot.
        staged: _Staged | None = None
        try:
            for k, transfer in enumerate(transfers):
                ahead = transfers[k + 1] if k < last else None
                if staged is not None:
                    resumed = staged
                    report, staged = await self._resume(resumed, ahead)
                    if resumed.doubted is not None:  # the dot's verdict was not to be trusted
                        reports[-1] = resumed.doubted
                else:
                    report, staged = await self._transfer(transfer, ahead)
                # A group written behind this transfer's dot is judged first, even when the
                # connection is gone: replies to it may have come (a 421 to its MAIL/RCPT).
                while staged is None and self._dead is None and self._proto.closed:
                    dead = await self._after_loss()
                    if dead is not None:
                        self._dead = dead
                        if dead.scope is Scope.SITE and _untried(report):
                            report = self._untried(transfer, dead)
                        break
                    if not _untried(report):
                        break
                    report, staged = await self._transfer(transfer, ahead)  # on the next host
                reports.append(report)
        finally:
            self._busy = False
            self._last_used = self._loop.time()
        return reports

    async def close(self) -> None:
        """QUIT (best effort: its failure changes nothing) and close the connection."""
        if self._dead is None:
            self._dead = local_outcome(T, Scope.SESSION, "4.4.2", "session closed", Phase.SESSION)
        await quit_and_close(self._proto, self.settings.quit_timeout)

    # -- one transfer ----------------------------------------------------------------------
    #
    # Each step returns the transfer's report and, when its content went out with the next
    # transfer's group behind the dot (``ahead``), that group: the next step resumes it.

    async def _transfer(
        self, t: Transfer, ahead: Transfer | None
    ) -> tuple[TransferReport, _Staged | None]:
        if self._dead is not None:
            return self._untried(t, self._dead), None
        if self._proto.closed:
            return self._untried(t, self._lost_outcome(Phase.SESSION)), None
        p = prepare(t, self._proto.conn, self._offer)
        if not isinstance(p, Prepared):
            return self._report(t, p), None
        self.transactions += 1
        try:
            accepted = await self._envelope(p)
        except LocalProtocolError as exc:
            return self._local_error(p, exc), None
        if accepted:
            return await self._content(p, accepted, ahead)
        return self._not_accepted(p, accepted), None

    async def _resume(
        self, staged: _Staged, ahead: Transfer | None
    ) -> tuple[TransferReport, _Staged | None]:
        """The replies to a group written behind the previous dot (whose reply came)."""
        proto = self._proto
        how = await proto.wait_replies(staged.replies, self.settings.command_timeout)
        replies = proto.replies
        proto.replies = []
        if len(replies) < staged.replies and proto.protocol_error and staged.behind is not None:
            # A reply in the group did not fit its command: the server answered out of order
            # (a reply held back, the next ones sent first), so the reply taken as the dot's
            # may have been the group's first. The dot's verdict is void: the message may
            # have been taken, or refused; it is retried as a possible duplicate.
            self.possible_duplicates += 1
            staged.doubted = dot_voided(staged.behind, "replies out of order after the dot")
        if staged.rset and replies:
            del replies[0]
        p = staged.prepared
        accepted = self._judge_envelope(p, replies, how)
        if accepted:
            return await self._content(p, accepted, ahead)
        return self._not_accepted(p, accepted), None

    def _not_accepted(self, p: Prepared, accepted: list[int] | None) -> TransferReport:
        """The report of a transaction that ended before its content (``accepted`` is []
        when it ended with nobody accepted, None when the results are complete)."""
        if accepted is not None and self._proto.conn.state in (State.MAIL, State.RCPT):
            self._need_rset = True  # nobody accepted: the RSET leads the next group
        return self._report(p.transfer, p.results)

    def _local_error(self, p: Prepared, exc: LocalProtocolError) -> TransferReport:
        """The engine refused a path that passed the event checks (intake uses the same
        grammar, so this is rare). Transient with a penalty, so a bug of ours cannot bounce
        mail, and a truly bad address expires in time. The engine is spent."""
        self._proto.abort(f"local protocol error: {exc}")
        t = p.transfer
        done = {i for r in p.results for i in r.rcpts}
        bad = local_outcome(T, Scope.MESSAGE, "4.3.0", f"local error: {exc}", Phase.LOCAL)
        rest = tuple(i for i in p.indexes if i not in done)
        p.results.append(Result(msg_id=t.msg_id, rcpts=rest, outcome=bad))
        return self._report(t, p.results)

    async def _envelope(self, p: Prepared) -> list[int] | None:
        """MAIL, RCPTs, DATA; see :meth:`_judge_envelope` for what it returns."""
        proto = self._proto
        timeout = self.settings.command_timeout
        replies: list[Reply] = []
        how = Wait.DONE
        if self._offer.pipelining:
            send = proto.conn.send
            rset = self._need_rset
            if rset:
                self._need_rset = False
                parts = [send(_RSET)]
                parts += [send(ev) for ev in p.events]
            else:
                parts = [send(ev) for ev in p.events]
            count = len(parts)
            proto.write(b"".join(parts))
            self.writes += 1
            how = await proto.wait_replies(count, timeout)
            replies = proto.replies
            proto.replies = []
            if rset and replies:
                del replies[0]
        else:
            if self._need_rset:
                self._need_rset = False
                proto.write(proto.conn.send(_RSET))
                self.writes += 1
                how = await proto.wait_replies(1, timeout)
                proto.replies = []
            if how is Wait.DONE and not proto.closed:
                events = p.events
                how = await self._step(events[0], replies, timeout)
                if how is Wait.DONE and replies[0].is_positive:
                    for ev in events[1:-1]:
                        how = await self._step(ev, replies, timeout)
                        if how is not Wait.DONE:
                            break
                    if how is Wait.DONE and any(r.is_positive for r in replies[1:]):
                        how = await self._step(_DATA, replies, timeout)
        return self._judge_envelope(p, replies, how)

    async def _step(self, ev: Event, replies: list[Reply], timeout: float) -> Wait:
        proto = self._proto
        if proto.closed:
            return Wait.CLOSED
        proto.write(proto.conn.send(ev))
        self.writes += 1
        how = await proto.wait_replies(1, timeout)
        if proto.replies:
            replies.append(proto.replies.pop(0))
        return how

    def _judge_envelope(self, p: Prepared, replies: list[Reply], how: Wait) -> list[int] | None:
        """Judge the replies to MAIL, the RCPTs and DATA (``how``: how their wait ended).
        Appends outcomes of refused recipients to ``p.results``; returns the accepted indexes
        when the 354 came (possibly empty if nobody was accepted), or None when the transfer
        is over (results complete)."""
        rcpts = p.indexes
        results = p.results
        msg_id = p.transfer.msg_id
        n = len(replies)
        if how is Wait.TIMEOUT:
            self._proto.abort("timeout waiting for a reply")
        if n == 0:
            lost = self._lost_outcome(Phase.MAIL, how)
            results.append(Result(msg_id=msg_id, rcpts=tuple(rcpts), outcome=lost))
            return None
        mail_reply = replies[0]
        if mail_reply.code >= 300:  # not is_positive
            outcome = self._refusal(mail_reply, Scope.MESSAGE, Phase.MAIL)
            results.append(Result(msg_id=msg_id, rcpts=tuple(rcpts), outcome=outcome))
            return None
        accepted: list[int] = []
        unanswered: list[int] = []
        for k, index in enumerate(rcpts, start=1):
            if k >= n:
                unanswered.append(index)
                continue
            reply = replies[k]
            if reply.code < 300:  # is_positive
                accepted.append(index)
            else:
                outcome = self._refusal(reply, Scope.RECIPIENT, Phase.RCPT)
                results.append(Result(msg_id=msg_id, rcpts=(index,), outcome=outcome))
        data_at = len(rcpts) + 1
        data_reply = replies[data_at] if data_at < n else None
        if unanswered or (accepted and data_reply is None):
            lost = self._lost_outcome(Phase.RCPT if unanswered else Phase.DATA, how)
            rest = tuple(unanswered + accepted)
            results.append(Result(msg_id=msg_id, rcpts=rest, outcome=lost))
            return None
        if not accepted:
            if data_reply is not None and data_reply.code == 354:
                # A server that opened DATA with no recipient: the engine will not send
                # content outside a transaction, so this connection cannot go on.
                self._proto.abort("354 to DATA without any accepted recipient")
            return []
        assert data_reply is not None
        if data_reply.code != 354 or not self._proto.conn.can_send_content:
            outcome = self._refusal(data_reply, Scope.MESSAGE, Phase.DATA)
            results.append(Result(msg_id=msg_id, rcpts=tuple(accepted), outcome=outcome))
            return None
        return accepted

    def _stage(self, ahead: Transfer, parts: list[bytes]) -> _Staged | None:
        """``ahead``'s group appended to ``parts`` to ride behind the final dot in them, or
        None when ``ahead`` has nothing to send (refused locally: decided again, as for any
        transfer, when its turn comes) or the engine refused one of its commands."""
        p = prepare(ahead, self._proto.conn, self._offer)
        if not isinstance(p, Prepared):
            return None
        rset = self._need_rset
        events = [_RSET, *p.events] if rset else p.events
        try:
            # All or nothing: a command the engine cannot write takes the group back whole,
            # so the content and dot before it still go out.
            self._proto.conn.send_group(events, parts)
        except LocalProtocolError:
            return None  # its own turn reports it (refused again, alone)
        self._need_rset = False
        self.transactions += 1
        return _Staged(p, len(events), rset)

    async def _content(
        self, p: Prepared, accepted: list[int], ahead: Transfer | None
    ) -> tuple[TransferReport, _Staged | None]:
        """After the 354: the content and the final dot in one write (with ``ahead``'s group
        behind them when pipelining), then the dot's verdict."""
        proto = self._proto
        conn = proto.conn
        settings = self.settings
        t = p.transfer
        results = p.results
        msg_id = t.msg_id
        rcpts = tuple(accepted)
        if proto.closed:  # the 354 came just before the connection went: nothing was sent
            lost = self._lost_outcome(Phase.CONTENT)
            results.append(Result(msg_id=msg_id, rcpts=rcpts, outcome=lost))
            return self._report(t, results), None
        try:
            content, end = conn.send_message_parts(t.body)  # send(DataChunk) + send(EndOfData)
        except LocalProtocolError as exc:  # pragma: no cover - check_content ran first
            proto.abort(f"content refused by the engine: {exc}")
            bad = local_outcome(P, Scope.MESSAGE, "5.6.0", str(exc), Phase.CONTENT, code=554)
            results.append(Result(msg_id=msg_id, rcpts=rcpts, outcome=bad))
            return self._report(t, results), None
        staged = None
        tail = 0
        if ahead is None or not self._offer.pipelining:
            proto.write(content + end)
        else:
            # The next transfer is prepared only now: the engine checks one body at a time,
            # and this one's checks were used when its content was produced above.
            parts = [content, end]
            staged = self._stage(ahead, parts)
            wire = b"".join(parts)
            tail = len(wire) - len(content) - len(end)
            proto.write(wire)
        self.writes += 1
        if proto.paused and not await proto.drain(settings.data_send_timeout):
            if not proto.paused or (tail and proto.transport is not None and proto.unsent <= tail):
                # The final dot left the process (only the group behind it, if anything, did
                # not) before the loss or the stall.
                why = proto.closed_reason or "data-send-timeout"
                return self._ambiguous(t, rcpts, results, why), None
            proto.abort("data-send-timeout")
            lost = local_outcome(
                T,
                Scope.SESSION,
                "4.4.2",
                f"content not sent: {proto.closed_reason}",
                Phase.CONTENT,
            )
            results.append(Result(msg_id=msg_id, rcpts=rcpts, outcome=lost))
            return self._report(t, results), None
        self.messages_sent += 1
        how = await proto.wait_replies(1, settings.smtp_data_termination_timeout)
        if not proto.replies:
            # No verdict: the staged group (if any) dies with the connection, untried.
            if how is Wait.TIMEOUT:
                proto.abort("smtp-data-termination-timeout")
                if settings.assume_delivery_upon_data_termination_timeout:
                    assumed = local_outcome(
                        OutcomeKind.DELIVERED,
                        Scope.RECIPIENT,
                        "2.0.0",
                        "no reply to the final dot in time; assumed delivered",
                        Phase.DOT,
                    )
                    results.append(Result(msg_id=msg_id, rcpts=rcpts, outcome=assumed))
                    return self._report(t, results, data_sent=True), None
                return self._ambiguous(t, rcpts, results, "no reply to the final dot in time"), None
            return self._ambiguous(t, rcpts, results, proto.closed_reason), None
        reply = proto.replies.pop(0)
        if reply.is_positive:
            outcome = reply_outcome(reply, Scope.RECIPIENT, Phase.DOT)
        else:
            outcome = self._refusal(reply, Scope.MESSAGE, Phase.DOT, tried=True)
        results.append(Result(msg_id=msg_id, rcpts=rcpts, outcome=outcome))
        report = self._report(t, results, data_sent=True)
        if staged is not None:
            staged.behind = report
        return report, staged

    # -- outcomes --------------------------------------------------------------------------

    def _refusal(
        self, reply: Reply, scope: Scope, phase: Phase, *, tried: bool = False
    ) -> DeliveryOutcome:
        """A 4xx/5xx reply's outcome; a 421 ends the session (RFC 5321 §3.8): session scope
        (nothing was tried) unless the content had been sent."""
        if reply.code == 421:
            self._last_421 = reply
            if not tried:
                scope = Scope.SESSION
        return reply_outcome(reply, scope, phase)

    def _ambiguous(
        self, t: Transfer, rcpts: tuple[int, ...], results: list[Result], why: str
    ) -> TransferReport:
        self._proto.abort(why)
        self.possible_duplicates += 1
        outcome = local_outcome(
            T,
            Scope.MESSAGE,
            "4.4.2",
            f"{why} after the final dot; possible duplicate",
            Phase.DOT,
            possible_duplicate=True,
        )
        results.append(Result(msg_id=t.msg_id, rcpts=rcpts, outcome=outcome))
        return self._report(t, results, data_sent=True, possible_duplicate=True)

    def _lost_outcome(self, phase: Phase, how: Wait = Wait.CLOSED) -> DeliveryOutcome:
        if how is Wait.TIMEOUT:
            return local_outcome(T, Scope.SESSION, "4.4.2", "timeout waiting for a reply", phase)
        reason = self._proto.closed_reason or "connection closed"
        return local_outcome(T, Scope.SESSION, "4.4.2", reason, phase)

    def _untried(self, t: Transfer, outcome: DeliveryOutcome) -> TransferReport:
        return TransferReport(
            msg_id=t.msg_id,
            results=(Result(msg_id=t.msg_id, rcpts=_indexes(t), outcome=outcome),),
            info=self.info,
        )

    def _report(
        self,
        t: Transfer,
        results: list[Result],
        *,
        data_sent: bool = False,
        possible_duplicate: bool = False,
    ) -> TransferReport:
        return TransferReport(
            msg_id=t.msg_id,
            results=tuple(results),
            data_sent=data_sent,
            possible_duplicate=possible_duplicate,
            info=self.info,
        )

    async def _after_loss(self) -> DeliveryOutcome | None:
        """The connection is gone. With ``smtp-421-means-mx-unavailable`` and a 421 as the
        cause, move on to the next MX host (None: a new connection is attached); otherwise
        the outcome for every transfer still to come."""
        reply = self._last_421
        self._last_421 = None
        self._proto.abort(self._proto.closed_reason)
        if reply is None or not self.settings.smtp_421_means_mx_unavailable:
            return self._lost_outcome(Phase.SESSION)
        self._plan.fallback(reply.code, greeting_text(reply))
        opened = await walk_plan(self._plan, self.settings, self._resolver)
        if isinstance(opened, RouteFailure):
            return route_outcome(opened)
        self._attach(*opened)
        return None

    @property
    def fallbacks(self) -> tuple[FallbackEvent, ...]:
        """Hosts given up during this session's life (connect and 421 fall-backs)."""
        return tuple(self._plan.fallbacks)


def _indexes(t: Transfer) -> tuple[int, ...]:
    return tuple(r.index for r in t.rcpts)


def _untried(report: TransferReport) -> bool:
    """No recipient of the report was tried (every outcome is a transient session one)."""
    return not report.data_sent and all(
        r.outcome.kind is OutcomeKind.TRANSIENT and r.outcome.scope is Scope.SESSION
        for r in report.results
    )
