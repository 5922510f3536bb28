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
content and the final dot go in one write after the 354. Outcomes follow Postfix's
``smtp_trouble`` scopes and test-plan §4 on ambiguous delivery: see docs/delivery.md.

Public names: open_session, Session. ``deliver`` raises DeliveryMisuseError when called while
another ``deliver`` runs on the same session; nothing else raises (failures are outcomes).
"""

from __future__ import annotations

from collections.abc import Sequence

from sluice.delivery._connect import greeting_text, quit_and_close, walk_plan
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
    MailFrom,
    RcptTo,
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


class Session:
    """A greeted SMTP connection that runs transfers (see the module docstring)."""

    __slots__ = (
        "_busy",
        "_dead",
        "_dsn",
        "_eight_bit_ok",
        "_last_421",
        "_last_used",
        "_loop",
        "_need_rset",
        "_pipelining",
        "_plan",
        "_proto",
        "_resolver",
        "_size_limit",
        "_size_param",
        "_utf8",
        "info",
        "messages_sent",
        "possible_duplicates",
        "settings",
        "transactions",
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
        self._attach(proto, info)

    def _attach(self, proto: ClientProtocol, info: SessionInfo) -> None:
        settings = self.settings
        ext = dict(info.extensions)
        self._proto = proto
        self.info = info
        self._need_rset = False
        self._last_used = self._loop.time()
        self._pipelining = "PIPELINING" in ext and not settings.ignore_pipelining
        self._eight_bit_ok = "8BITMIME" in ext or settings.ignore_8bitmime
        self._dsn = "DSN" in ext and not settings.ignore_dsn
        self._utf8 = "SMTPUTF8" in ext
        self._size_param = "SIZE" in ext
        size = ext.get("SIZE", "")
        self._size_limit = int(size) if size.isdigit() and int(size) > 0 else 0

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
        return self._pipelining

    # -- deliver ---------------------------------------------------------------------------

    async def deliver(self, transfers: Sequence[Transfer]) -> list[TransferReport]:
        """Run ``transfers`` in order; one report per transfer, every recipient once."""
        if self._busy:
            raise DeliveryMisuseError("deliver() is already running on this session")
        self._busy = True
        reports: list[TransferReport] = []
        try:
            for transfer in transfers:
                report = await self._transfer(transfer)
                while self._dead is None and self._proto.closed:
                    dead = await self._after_loss()
                    if dead is not None:
                        self._dead = dead
                        if dead.scope is Scope.SITE and _untried(report):
                            report = self._untried(transfer, dead)
                        break
                    if not _untried(report):
                        break
                    report = await self._transfer(transfer)  # again, on the next MX host
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

    async def _transfer(self, t: Transfer) -> TransferReport:
        if self._dead is not None:
            return self._untried(t, self._dead)
        if self._proto.closed:
            return self._untried(t, self._lost_outcome(Phase.SESSION))
        mail, refused = self._mail_from(t)
        if refused is not None:
            return self._report(t, [Result(msg_id=t.msg_id, rcpts=_indexes(t), outcome=refused)])
        assert mail is not None
        results: list[Result] = []
        rcpts: list[tuple[int, RcptTo]] = []
        dsn = self._dsn
        for r in t.rcpts:
            try:
                if dsn:
                    ev = RcptTo(address=r.address, notify=r.notify, orcpt=r.orcpt)
                else:
                    ev = RcptTo(address=r.address)
            except LocalProtocolError as exc:
                bad = local_outcome(P, Scope.RECIPIENT, "5.1.3", str(exc), Phase.LOCAL, code=553)
                results.append(Result(msg_id=t.msg_id, rcpts=(r.index,), outcome=bad))
            else:
                rcpts.append((r.index, ev))
        if not rcpts:
            return self._report(t, results)
        self.transactions += 1
        try:
            accepted = await self._envelope(t, mail, rcpts, results)
        except LocalProtocolError as exc:
            # The engine refused a path that passed the event checks (intake uses the same
            # grammar, so this is rare): the engine is spent. Transient with a penalty, so a
            # bug of ours cannot bounce mail, and a truly bad address expires in time.
            self._proto.abort(f"local protocol error: {exc}")
            done = {i for r in results for i in r.rcpts}
            bad = local_outcome(T, Scope.MESSAGE, "4.3.0", f"local error: {exc}", Phase.LOCAL)
            rest = tuple(i for i, _ in rcpts if i not in done)
            results.append(Result(msg_id=t.msg_id, rcpts=rest, outcome=bad))
            return self._report(t, results)
        if accepted is None:
            return self._report(t, results)
        if not accepted:
            if self._proto.conn.state in (State.MAIL, State.RCPT):
                self._need_rset = True
            return self._report(t, results)
        return await self._content(t, accepted, results)

    def _mail_from(self, t: Transfer) -> tuple[MailFrom | None, DeliveryOutcome | None]:
        """The MAIL FROM for ``t``, or why ``t`` cannot be sent to this server at all."""
        body = t.body
        # The engine checks the body once here and remembers it, so sending this same body
        # after the 354 does not scan it again.
        problem = self._proto.conn.check_content(body)
        if problem is not None:
            why = "NUL octet" if problem == "nul" else "line longer than 998 octets"
            return None, local_outcome(
                P, Scope.MESSAGE, "5.6.0", f"message cannot be sent: {why}", Phase.LOCAL, code=554
            )
        if self._size_limit and len(body) > self._size_limit:
            return None, local_outcome(
                P,
                Scope.MESSAGE,
                "5.3.4",
                f"message size {len(body)} exceeds the server's limit {self._size_limit}",
                Phase.LOCAL,
                code=552,
            )
        eight_bit = t.eight_bit or not body.isascii()
        if eight_bit and not self._eight_bit_ok:
            return None, local_outcome(
                P,
                Scope.MESSAGE,
                "5.6.3",
                "8-bit message and the server does not support 8BITMIME",
                Phase.LOCAL,
                code=554,
            )
        ascii_paths = t.sender.isascii()
        if ascii_paths:
            for r in t.rcpts:
                if not r.address.isascii():
                    ascii_paths = False
                    break
        utf8 = not ascii_paths or (t.smtputf8 and eight_bit)
        if utf8 and not self._utf8:
            return None, local_outcome(
                P,
                Scope.MESSAGE,
                "5.6.7",
                "internationalised message and the server does not support SMTPUTF8",
                Phase.LOCAL,
                code=553,
            )
        dsn = self._dsn
        try:
            mail = MailFrom(
                address=t.sender,
                size=len(body) if self._size_param else None,
                body="8BITMIME" if eight_bit and not self.settings.ignore_8bitmime else None,
                smtputf8=utf8,
                ret=t.ret if dsn else None,
                envid=t.envid if dsn else None,
            )
        except LocalProtocolError as exc:
            return None, local_outcome(P, Scope.MESSAGE, "5.1.7", str(exc), Phase.LOCAL, code=553)
        return mail, None

    async def _envelope(
        self, t: Transfer, mail: MailFrom, rcpts: list[tuple[int, RcptTo]], results: list[Result]
    ) -> list[int] | None:
        """MAIL, RCPTs, DATA. Appends outcomes of refused recipients to ``results``; returns
        the accepted indexes when the 354 came (possibly empty if nobody was accepted), or
        None when the transfer is over (results complete)."""
        proto = self._proto
        conn = proto.conn
        timeout = self.settings.command_timeout
        replies: list[Reply] = []
        how = Wait.DONE
        if self._pipelining:
            send = conn.send
            parts = [send(_RSET), send(mail)] if self._need_rset else [send(mail)]
            for _, ev in rcpts:
                parts.append(send(ev))
            parts.append(send(_DATA))
            proto.write(b"".join(parts))
            how = await proto.wait_replies(len(parts), timeout)
            replies = proto.replies
            proto.replies = []
            if self._need_rset:
                self._need_rset = False
                if replies:
                    del replies[0]
        else:
            if self._need_rset:
                self._need_rset = False
                proto.write(conn.send(_RSET))
                how = await proto.wait_replies(1, timeout)
                proto.replies = []
            if how is Wait.DONE and not proto.closed:
                how = await self._step(mail, replies, timeout)
                if how is Wait.DONE and replies[0].is_positive:
                    for _, ev in rcpts:
                        how = await self._step(ev, replies, timeout)
                        if how is not Wait.DONE:
                            break
                    if how is Wait.DONE and any(r.is_positive for r in replies[1:]):
                        how = await self._step(_DATA, replies, timeout)
        return self._judge_envelope(t, rcpts, replies, how, results)

    async def _step(self, ev: Event, replies: list[Reply], timeout: float) -> Wait:
        proto = self._proto
        if proto.closed:
            return Wait.CLOSED
        proto.write(proto.conn.send(ev))
        how = await proto.wait_replies(1, timeout)
        if proto.replies:
            replies.append(proto.replies.pop(0))
        return how

    def _judge_envelope(
        self,
        t: Transfer,
        rcpts: list[tuple[int, RcptTo]],
        replies: list[Reply],
        how: Wait,
        results: list[Result],
    ) -> list[int] | None:
        msg_id = t.msg_id
        n = len(replies)
        if how is Wait.TIMEOUT:
            self._proto.abort("timeout waiting for a reply")
        if n == 0:
            lost = self._lost_outcome(Phase.MAIL, how)
            results.append(Result(msg_id=msg_id, rcpts=tuple(i for i, _ in rcpts), outcome=lost))
            return None
        mail_reply = replies[0]
        if mail_reply.code >= 300:  # not is_positive
            outcome = self._refusal(mail_reply, Scope.MESSAGE, Phase.MAIL)
            results.append(Result(msg_id=msg_id, rcpts=tuple(i for i, _ in rcpts), outcome=outcome))
            return None
        accepted: list[int] = []
        unanswered: list[int] = []
        for k, (index, _) in enumerate(rcpts, start=1):
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

    async def _content(
        self, t: Transfer, accepted: list[int], results: list[Result]
    ) -> TransferReport:
        """After the 354: the content and the final dot in one write, then the verdict."""
        proto = self._proto
        conn = proto.conn
        settings = self.settings
        msg_id = t.msg_id
        rcpts = tuple(accepted)
        try:
            wire = conn.send_message(t.body)  # send(DataChunk) + send(EndOfData) in one
        except LocalProtocolError as exc:  # pragma: no cover - check_content ran first
            proto.abort(f"content refused by the engine: {exc}")
            bad = local_outcome(P, Scope.MESSAGE, "5.6.0", str(exc), Phase.CONTENT, code=554)
            results.append(Result(msg_id=msg_id, rcpts=rcpts, outcome=bad))
            return self._report(t, results)
        proto.write(wire)
        if proto.paused and not await proto.drain(settings.data_send_timeout):
            if not proto.paused:  # everything reached the kernel before the loss
                return self._ambiguous(t, rcpts, results, proto.closed_reason)
            proto.abort("data-send-timeout")
            lost = local_outcome(
                T,
                Scope.SESSION,
                "4.4.2",
                f"content not sent: {proto.closed_reason}",
                Phase.CONTENT,
            )
            results.append(Result(msg_id=msg_id, rcpts=rcpts, outcome=lost))
            return self._report(t, results)
        self.messages_sent += 1
        how = await proto.wait_replies(1, settings.smtp_data_termination_timeout)
        if not proto.replies:
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
                    return self._report(t, results, data_sent=True)
                return self._ambiguous(t, rcpts, results, "no reply to the final dot in time")
            return self._ambiguous(t, rcpts, results, proto.closed_reason)
        reply = proto.replies.pop(0)
        if reply.is_positive:
            outcome = reply_outcome(reply, Scope.RECIPIENT, Phase.DOT)
        else:
            outcome = self._refusal(reply, Scope.MESSAGE, Phase.DOT, tried=True)
        results.append(Result(msg_id=msg_id, rcpts=rcpts, outcome=outcome))
        return self._report(t, results, data_sent=True)

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
