"""One injection session: an asyncio Protocol driving ``smtp.Connection(SERVER)``.

Bytes from the socket go into the engine; each event it returns is judged by the source
policy and answered with one reply. The replies of one read are written with one
``transport.write`` (pipelining costs one syscall per batch). At the end of DATA the session
hands the message to the :class:`~sluice.intake.inject.Injector` (``submit``: a callback when
the store answers, no task per message; the server tracks the store in flight), holds any
bytes pipelined behind the dot (it stops reading only if some arrive), and writes the 250
only when the store returned (the message is durable); then it calls the hand-off hooks and
resumes with whatever the client pipelined behind the dot.

Deadlines are stamps read by the server's single sweeper: a command must be complete within
``command_timeout`` of its first byte (a per-record deadline: trickling does not extend it),
a DATA read within ``command_timeout`` of the previous one, and an idle session is closed
after ``idle_timeout``; both end with 421 4.4.2.

Public names: SmtpSession, PolicySetup.
Nothing is raised to asyncio: engine faults become a reply and a close, store failures a
4xx, unexpected errors are logged and the connection aborted.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from sluice import smtp
from sluice.errors import ReplyHint
from sluice.intake.inject import InjectResult, Transaction
from sluice.intake.policy import SourcePolicy, check_connect, check_mail, check_rcpt
from sluice.message import Recipient
from sluice.smtp import (
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    DataChunk,
    Ehlo,
    EndOfChunk,
    EndOfData,
    Event,
    Helo,
    Help,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    RemoteProtocolError,
    Reply,
    Rset,
    Signal,
    StartTls,
    Vrfy,
)
from sluice.smtp import replies as R

if TYPE_CHECKING:
    from sluice.intake.listener import IntakeServer

__all__ = ["PolicySetup", "SmtpSession"]

log = logging.getLogger("sluice.intake")

_STATUS_OK = smtp.EnhancedStatus(klass=2, subject=0, detail=0)
_CLOSED = smtp.State.CLOSED
_DATA = smtp.State.DATA
_NOT_AVAILABLE = smtp.Reply.of(454, "4.7.0", "TLS not available")
_hint_replies: dict[ReplyHint, smtp.Reply] = {}


def reply_of(hint: ReplyHint) -> smtp.Reply:
    """The engine Reply for a policy hint (cached: hints are few and constant)."""
    reply = _hint_replies.get(hint)
    if reply is None:
        reply = smtp.Reply.of(hint.code, hint.enhanced or None, hint.text)
        if len(_hint_replies) < 256:
            _hint_replies[hint] = reply
    return reply


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySetup:
    """What a session needs per source policy, built once per policy by the server."""

    policy: SourcePolicy
    limits: smtp.Limits
    ehlo: smtp.Reply
    helo: smtp.Reply
    greeting: smtp.Reply
    closing: smtp.Reply


class SmtpSession(asyncio.Protocol):
    """One SMTP connection; created by the server's protocol factory."""

    __slots__ = (
        "_chunks",
        "_greet_handle",
        "_in_command",
        "_log_connections",
        "_peer_eof",
        "_read_paused",
        "_shutdown",
        "_storing",
        "_write_paused",
        "client_ip",
        "closed",
        "conn",
        "deadline",
        "helo",
        "protocol",
        "server",
        "setup",
        "transport",
        "txn",
    )

    def __init__(self, server: IntakeServer) -> None:
        self.server = server
        self.deadline = math.inf
        self.closed = False
        self.client_ip = ""
        self.helo = ""
        self.protocol = "SMTP"
        self.txn: Transaction | None = None
        self._chunks: list[bytes] = []
        self._storing = False
        self._shutdown = False
        self._write_paused = False
        self._read_paused = False
        self._in_command = False
        self._peer_eof = False
        self._log_connections = False
        self._greet_handle: asyncio.TimerHandle | None = None

    # --- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        self.client_ip = ip
        server = self.server
        if not server.admit(self, ip):
            self._refuse(R.SHUTTING_DOWN if server.shutting_down else R.TOO_MANY_CONNECTIONS)
            return
        if server.busy is not None:
            self._refuse(smtp.Reply.of(421, server.busy[1], server.busy[2]))
            return
        setup = server.setup_for(ip)
        self.setup = setup
        policy = setup.policy
        if policy.log_connections:
            self._log_connections = True
            log.info("connect from %s", ip)
        hint = check_connect(policy)
        if hint is not None:
            self._refuse(reply_of(hint))
            return
        self.conn = smtp.ServerConnection(
            smtp.SERVER,
            limits=setup.limits,
            bare_line_ending=policy.bare_lf_policy,
            long_lines=policy.long_lines,
        )
        limits = server.limits
        now = server.clock.monotonic()
        pause = 0.0 if policy.always_allow_relaying else limits.untrusted_greet_pause
        if pause > 0:
            self.deadline = now + pause + limits.idle_timeout
            loop = asyncio.get_running_loop()
            self._greet_handle = loop.call_later(pause, self._greet)
        else:
            self._greet(now)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        conn = self.conn
        server = self.server
        now = server.clock.monotonic()  # read once: the command and idle deadlines share it
        if not self._in_command or conn.state is _DATA:
            self._in_command = True
            self.deadline = now + server.limits.command_timeout
        conn.receive_data(data)
        if not self._storing:
            self._pump(now)
        elif not self._read_paused:
            # Bytes behind the dot while the store is in flight: keep them, read no more
            # until it is answered. Paused only now, not at every dot: a lock-step client
            # sends nothing before the 250, and each pause and resume costs the loop work.
            self._read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self.closed:
            return None
        self._peer_eof = True
        self.conn.receive_data(b"")
        if self._storing:
            return True  # keep the socket: the 250 is still owed; _answer_store pumps the EOF
        self._pump()
        return None  # close our side too (after flushing the replies)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._greet_handle is not None:
            self._greet_handle.cancel()
            self._greet_handle = None
        if not self.closed:
            self.closed = True
        self.server.release(self, self.client_ip)
        if self._log_connections:
            log.info("disconnect from %s", self.client_ip)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its commands.
        self._write_paused = True
        if not self.closed and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self.closed and not self._storing and self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()

    # --- server-driven events ----------------------------------------------------------

    def on_timeout(self) -> None:
        """The sweeper found this session past its deadline."""
        if self.closed:
            return
        if self._storing:  # the store decides; its reply resets the deadline
            self.deadline = self.server.clock.monotonic() + self.server.limits.command_timeout
            return
        self._close_with(R.TIMEOUT)

    def begin_shutdown(self) -> None:
        """Daemon stop: 421 4.3.2 now, or after the store in flight has been answered."""
        if self.closed:
            return
        if self._storing:
            self._shutdown = True
            return
        self._close_with(R.SHUTTING_DOWN)

    def _is_closed(self) -> bool:
        """``closed``, read through a call: a type checker (and mypyc, which compiles by its
        types) must not assume the value it saw before a call that may have changed it."""
        return self.closed

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    # --- internals ---------------------------------------------------------------------

    def _refuse(self, reply: smtp.Reply) -> None:
        """Answer a connection we will not serve, and close it."""
        self.closed = True
        self.transport.write(reply.to_bytes())
        self.transport.close()

    def _close_with(self, reply: smtp.Reply) -> None:
        """An unsolicited reply (RFC 5321 §3.8: 421 at any time), then close.

        Written directly: the engine only sends replies that are owed.
        """
        self.closed = True
        self.transport.write(reply.to_bytes())
        self.transport.close()

    def _greet(self, now: float | None = None) -> None:
        self._greet_handle = None
        if self.closed:
            return
        if now is None:  # after the greet pause
            now = self.server.clock.monotonic()
        self.deadline = now + self.server.limits.idle_timeout
        conn = self.conn
        if conn.buffered_bytes:  # an early talker: the engine raises 554 5.5.0
            self._pump()
            return
        self.transport.write(conn.send(self.setup.greeting))

    def _pump(self, now: float | None = None) -> None:
        """Turn buffered bytes into events and replies until the engine needs more bytes.

        The replies of one read go out in one write (a pipelined MAIL, RCPT, DATA costs
        one syscall); content chunks owe no reply and are only collected. ``now``: the
        clock as read when the bytes arrived (the idle deadline counts from it), or None.
        """
        conn = self.conn
        log_commands = self.setup.policy.log_commands
        out: list[bytes] = []
        send = conn.send
        next_event = conn.next_event
        try:
            while True:
                try:
                    ev = next_event()
                except RemoteProtocolError as exc:
                    if exc.reply is not None:
                        out.append(send(exc.reply))
                    if log_commands:
                        log.info("%s: protocol error: %s", self.client_ip, exc)
                    self._flush_and_close(out)
                    return
                if type(ev) is DataChunk:
                    self._chunks.append(ev.data)
                    continue
                if isinstance(ev, Signal):  # NEED_DATA, or PAUSED (greeting not sent yet)
                    break
                kind = type(ev)
                if kind is ConnectionClosed:
                    self._flush_and_close(out)
                    return
                if log_commands:
                    log.info("%s: %r", self.client_ip, ev)
                handler = _HANDLERS.get(kind)
                if handler is None:
                    raise AssertionError(f"unexpected SMTP event {ev!r}")
                reply = handler(self, ev)
                if reply is None:
                    if self._storing or self.closed:
                        break
                    continue
                out.append(send(reply))
                if conn.state is _CLOSED:
                    self._flush_and_close(out)
                    return
        except Exception:
            log.exception("intake session %s failed", self.client_ip)
            self._flush_and_close(out)
            return
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if not self._storing and not conn.buffered_bytes and conn.state is not _DATA:
            self._in_command = False
            if now is None:
                now = self.server.clock.monotonic()
            self.deadline = now + self.server.limits.idle_timeout

    def _flush_and_close(self, out: list[bytes]) -> None:
        if out:
            self.transport.write(b"".join(out))
        self.closed = True
        self.transport.close()

    # --- one handler per event type (the _HANDLERS table below) ------------------------
    # Each returns the reply, or None when it owes none (or the store answers it).

    def _on_rcpt(self, ev: RcptTo) -> Reply | None:
        txn = self.txn
        if txn is None:
            return R.NEED_MAIL
        hint = check_rcpt(self.setup.policy, ev.address, len(txn.recipients), routed=bool(ev.route))
        if hint is not None:
            return reply_of(hint)
        txn.recipients.append(Recipient(address=ev.address, notify=ev.notify, orcpt=ev.orcpt))
        return R.RECIPIENT_OK

    def _on_mail(self, ev: MailFrom) -> Reply | None:
        busy = self.server.busy
        if busy is not None:
            return Reply.of(busy[0], busy[1], busy[2])
        hint = check_mail(self.setup.policy, ev.size)
        if hint is not None:
            return reply_of(hint)
        self.txn = Transaction(
            sender=ev.address,
            recipients=[],
            env_id=ev.envid,
            ret=ev.ret,
            smtputf8=ev.smtputf8,
            body_8bit=ev.body == "8BITMIME",
        )
        return R.SENDER_OK

    def _on_data(self, ev: Data) -> Reply | None:
        self._chunks = []
        return R.START_MAIL_INPUT

    def _on_end_of_data(self, ev: EndOfData) -> Reply | None:
        if ev.reject is not None:
            self._end_txn()
            return ev.reject
        self._start_store(ev)
        return None

    def _on_ehlo(self, ev: Ehlo) -> Reply | None:
        self.helo = ev.domain
        self.protocol = "ESMTP"
        self._end_txn()
        return self.setup.ehlo

    def _on_helo(self, ev: Helo) -> Reply | None:
        self.helo = ev.domain
        self.protocol = "SMTP"
        self._end_txn()
        return self.setup.helo

    def _on_quit(self, ev: Quit) -> Reply | None:
        return self.setup.closing

    def _on_rset(self, ev: Rset) -> Reply | None:
        self._end_txn()
        return R.OK

    def _on_bad_command(self, ev: BadCommand) -> Reply | None:
        return ev.reply

    def _on_bdat(self, ev: Bdat) -> Reply | None:
        return None

    def _on_end_of_chunk(self, ev: EndOfChunk) -> Reply | None:
        if ev.reject is not None:
            self._end_txn()
            return ev.reject
        return Reply(code=250, lines=(f"{ev.size} octets received",), enhanced=_STATUS_OK)

    def _on_noop(self, ev: Noop) -> Reply | None:
        return R.OK

    def _on_vrfy(self, ev: Vrfy) -> Reply | None:
        return R.CANNOT_VRFY

    def _on_help(self, ev: Help) -> Reply | None:
        return R.HELP

    def _on_starttls(self, ev: StartTls) -> Reply | None:
        return _NOT_AVAILABLE

    def _on_auth(self, ev: Auth | AuthResponse) -> Reply | None:
        return R.COMMAND_NOT_IMPLEMENTED

    def _end_txn(self) -> None:
        self.txn = None
        self._chunks = []

    # --- end of data: store, then answer -------------------------------------------------

    def _start_store(self, ev: smtp.EndOfData) -> None:
        txn = self.txn
        chunks = self._chunks
        self.txn = None
        self._chunks = []
        if txn is None or not txn.recipients:  # the engine's sequence rules prevent this
            raise AssertionError("end of data without a transaction")
        content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._storing = True  # data_received holds what comes next until the answer
        if ev.long_lines:
            txn.long_lines = True
        server = self.server
        future = server.injector.submit(
            txn,
            content,
            self.setup.policy,
            helo=self.helo,
            client_ip=self.client_ip,
            protocol=self.protocol if not txn.smtputf8 else "UTF8" + self.protocol,
            done=self._store_answered,
        )
        if future is not None:
            server.track(future)

    def _store_answered(self, result: InjectResult) -> None:
        """The store's outcome: answer (the 250 only once the message is durable), then
        hand off. Called from the loop by the injector (a callback, not a task)."""
        try:
            self._answer_store(result)
        except Exception:
            log.exception("intake session %s failed after end of data", self.client_ip)
            self.abort()

    def _answer_store(self, result: InjectResult) -> None:
        server = self.server
        self._storing = False
        msg_id = result.msg_id
        if self.closed or self.transport.is_closing():
            if msg_id is not None:
                # Durable but never acknowledged: the client will send it again (a duplicate
                # is allowed, a loss is not). Hand it off all the same.
                self._hand_off(msg_id, result)
            return
        if msg_id is not None:
            reply = Reply(code=250, lines=(f"Ok: queued as {msg_id}",), enhanced=_STATUS_OK)
        else:
            reply = reply_of(result.reply)
        try:
            self.transport.write(self.conn.send(reply))
        except smtp.LocalProtocolError:
            log.exception("intake session %s: engine refused the reply", self.client_ip)
            self.abort()
        if msg_id is not None:
            self._hand_off(msg_id, result)
        if self._is_closed():  # abort() above may have closed it
            return
        if self._shutdown:
            self._close_with(R.SHUTTING_DOWN)
            return
        self.deadline = server.clock.monotonic() + server.limits.idle_timeout
        self._in_command = False
        if self._read_paused and not self._write_paused:
            self._read_paused = False
            self.transport.resume_reading()
        if self._peer_eof or self.conn.buffered_bytes:
            self._pump()  # what was pipelined behind the dot, or the EOF that came with it

    def _hand_off(self, msg_id: int, result: InjectResult) -> None:
        envelope = result.envelope
        assert envelope is not None
        hooks = self.server.hooks
        try:
            if hooks.on_accepted is not None:
                hooks.on_accepted(msg_id, envelope)
            if hooks.on_received is not None:
                hooks.on_received(msg_id, envelope, result.size)
        except Exception:
            log.exception("intake hand-off hook failed for message %s", msg_id)


_Handler = Callable[[SmtpSession, Event], Reply | None]

#: Event type → its handler (one dict look-up per event instead of a chain of class tests).
_HANDLERS: dict[type[Event], _Handler] = {
    RcptTo: SmtpSession._on_rcpt,  # type: ignore[dict-item]
    MailFrom: SmtpSession._on_mail,  # type: ignore[dict-item]
    Data: SmtpSession._on_data,  # type: ignore[dict-item]
    EndOfData: SmtpSession._on_end_of_data,  # type: ignore[dict-item]
    Ehlo: SmtpSession._on_ehlo,  # type: ignore[dict-item]
    Helo: SmtpSession._on_helo,  # type: ignore[dict-item]
    Quit: SmtpSession._on_quit,  # type: ignore[dict-item]
    Rset: SmtpSession._on_rset,  # type: ignore[dict-item]
    BadCommand: SmtpSession._on_bad_command,  # type: ignore[dict-item]
    Bdat: SmtpSession._on_bdat,  # type: ignore[dict-item]
    EndOfChunk: SmtpSession._on_end_of_chunk,  # type: ignore[dict-item]
    Noop: SmtpSession._on_noop,  # type: ignore[dict-item]
    Vrfy: SmtpSession._on_vrfy,  # type: ignore[dict-item]
    Help: SmtpSession._on_help,  # type: ignore[dict-item]
    StartTls: SmtpSession._on_starttls,  # type: ignore[dict-item]
    Auth: SmtpSession._on_auth,  # type: ignore[dict-item]
    AuthResponse: SmtpSession._on_auth,  # type: ignore[dict-item]
}
