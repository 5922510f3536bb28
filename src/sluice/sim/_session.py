"""One simulator connection: an asyncio Protocol driving ``smtp.Connection(SERVER)``.

Per event it asks the fault knobs, then the profile (only when it is stateful), then counts.
All replies produced by one read go out in one ``transport.write``. A session counts as
open until it is answered 221, refused, or closed, so that a client that waits for the 221
before opening the next connection is never seen above its own cap.

Public names: SimSession. Nothing is raised to asyncio: protocol faults become a reply and
a close.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from sluice import smtp
from sluice.sim._faults import GREETING_421, fault_reply, parse_recipient_fault
from sluice.sim._ledger import LedgerEntry, MessageRecorder
from sluice.sim._profiles import Refusal, Stage
from sluice.sim._stats import SourceCounters
from sluice.smtp import replies as R

if TYPE_CHECKING:
    from sluice.sim._server import SimServer

__all__ = ["SimSession"]

_NOT_IMPLEMENTED = R.COMMAND_NOT_IMPLEMENTED
_NO_TLS = smtp.Reply.of(454, "4.7.0", "TLS not available")


class SimSession(asyncio.Protocol):
    """One connection to a :class:`~sluice.sim.SimServer`."""

    __slots__ = (
        "_admitted",
        "_data_code",
        "_delay_handle",
        "_delayed_size",
        "_ended",
        "_hangup",
        "_held",
        "_mail_from",
        "_must_close",
        "_rcpts",
        "_recorder",
        "_slot",
        "_tarpit",
        "closed",
        "conn",
        "counters",
        "ip",
        "n_rcpt",
        "server",
        "transport",
    )

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.ip = ""
        self.closed = False
        self._ended = False
        self._tarpit = False
        self._admitted = False
        self._slot = False
        self._held = False
        self._hangup = False
        self._data_code: int | None = None
        self._mail_from = ""
        self._rcpts: list[str] = []
        self._recorder: MessageRecorder | None = None
        self._delay_handle: asyncio.TimerHandle | None = None
        self._delayed_size = 0
        self._must_close = False
        self.n_rcpt = 0

    # --- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        self.ip = ip
        server = self.server
        c = self.counters = server.session_opened(self)
        faults = server.faults
        if faults.tarpit:
            self._tarpit = True
            return
        if faults.greet_421:
            self._refuse(Refusal(reply=GREETING_421, tag="greet-421", deferral=False))
            return
        profile = server.profile
        if profile.stateful and profile.connect_stage is Stage.GREETING:
            refusal = profile.on_connect(ip, server.now())
            if refusal is not None:
                self._refuse(refusal)
                return
            self._admitted = True
        self.conn = smtp.ServerConnection(
            smtp.SERVER, limits=server.limits, long_lines=smtp.LongLinePolicy.ACCEPT
        )
        self._write(self.conn.send(server.greeting), server.greeting.code, c)

    def data_received(self, data: bytes) -> None:
        self.counters.bytes_in += len(data)
        if self.closed or self._tarpit:
            return
        self.conn.receive_data(data)
        if not self._held:
            self._pump()

    def eof_received(self) -> bool | None:
        if not self.closed and not self._tarpit:
            self.conn.receive_data(b"")
            if not self._held:
                self._pump()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._delay_handle is not None:
            self._delay_handle.cancel()
            self._delay_handle = None
            self._record(self._delayed_size, acknowledged=False)
            self._end_txn()
        self._end()

    # --- bookkeeping -------------------------------------------------------------------

    def _end(self) -> None:
        """The session stops counting as open (idempotent)."""
        if self._ended:
            return
        self._ended = True
        server = self.server
        if self._slot:
            self._slot = False
            server.profile.on_abort(self.ip, server.now())
        if self._admitted:
            self._admitted = False
            server.profile.on_disconnect(self.ip, server.now())
        server.session_closed(self)

    def _write(self, data: bytes, code: int, c: SourceCounters) -> None:
        c.replies[code] = c.replies.get(code, 0) + 1
        c.bytes_out += len(data)
        self.transport.write(data)

    def _refuse(self, refusal: Refusal) -> None:
        """Answer a connection we will not serve, and close it."""
        c = self.counters
        c.refused_connections += 1
        self.server.refused(self.ip, refusal, c)
        self._write(refusal.reply.to_bytes(), refusal.reply.code, c)
        self._close()

    def _close(self) -> None:
        self.closed = True
        self._end()
        self.transport.close()

    def abort(self) -> None:
        """Server shutdown: drop the connection."""
        if not self.closed:
            self.closed = True
            self._end()
        self.transport.abort()

    def _end_txn(self) -> None:
        if self._slot:
            self._slot = False
            self.server.profile.on_abort(self.ip, self.server.now())
        self.n_rcpt = 0
        self._data_code = None
        self._hangup = False
        self._recorder = None
        if self._rcpts:
            self._rcpts = []

    # --- the event loop of one read ----------------------------------------------------

    def _pump(self) -> None:
        conn = self.conn
        c = self.counters
        replies = c.replies
        out: list[bytes] = []
        send = conn.send
        while True:
            try:
                ev = conn.next_event()
            except smtp.RemoteProtocolError as exc:
                if exc.reply is not None:
                    out.append(send(exc.reply))
                    replies[exc.reply.code] = replies.get(exc.reply.code, 0) + 1
                self._flush(out, c)
                self._close()
                return
            if isinstance(ev, smtp.Signal):  # NEED_DATA, or PAUSED (a reply is held)
                break
            reply = self._handle(ev)
            if reply is None:
                if self._must_close:
                    self._flush(out, c)
                    self._close()
                    return
                if self._held:
                    break
                continue
            out.append(send(reply))
            code = reply.code
            replies[code] = replies.get(code, 0) + 1
            if conn.state is smtp.State.CLOSED:
                self._flush(out, c)
                self._close()
                return
        self._flush(out, c)

    def _flush(self, out: list[bytes], c: SourceCounters) -> None:
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            c.bytes_out += len(data)
            self.transport.write(data)

    def _handle(self, ev: smtp.Event) -> smtp.Reply | None:
        server = self.server
        match ev:
            case smtp.DataChunk():
                rec = self._recorder
                if rec is not None:
                    rec.feed(ev.data)
                return None
            case smtp.RcptTo():
                return self._rcpt(ev.address)
            case smtp.MailFrom():
                self._end_txn()
                if server.ledger is not None:
                    self._mail_from = ev.address
                return R.SENDER_OK
            case smtp.Data():
                if server.ledger is not None:
                    self._recorder = MessageRecorder()
                return R.START_MAIL_INPUT
            case smtp.EndOfData():
                return self._end_of_data(ev)
            case smtp.Ehlo() | smtp.Helo():
                self._end_txn()
                profile = server.profile
                if profile.stateful and profile.connect_stage is Stage.EHLO and not self._admitted:
                    refusal = profile.on_connect(self.ip, server.now())
                    if refusal is not None:
                        self.counters.refused_connections += 1
                        server.refused(self.ip, refusal, self.counters)
                        return refusal.reply
                    self._admitted = True
                return server.ehlo if isinstance(ev, smtp.Ehlo) else server.helo
            case smtp.Quit():
                self._end_txn()
                return server.closing
            case smtp.Rset():
                self._end_txn()
                return R.OK
            case smtp.BadCommand():
                return ev.reply
            case smtp.Noop():
                return R.OK
            case smtp.Vrfy():
                return R.CANNOT_VRFY
            case smtp.Help():
                return R.HELP
            case smtp.StartTls():
                return _NO_TLS
            case smtp.ConnectionClosed():
                self._must_close = True
                return None
            case smtp.EndOfChunk():
                self._end_txn()
                return _NOT_IMPLEMENTED
            case _:  # Bdat, Auth, AuthResponse: not offered
                return _NOT_IMPLEMENTED

    def _rcpt(self, address: str) -> smtp.Reply:
        server = self.server
        if server.faults.recipient_instructions:
            fault = parse_recipient_fault(address)
            if fault is not None:
                if fault.rcpt_code is not None:
                    reply = fault_reply(fault.rcpt_code)
                    tags = self.counters.tags
                    tag = f"t{fault.rcpt_code}"
                    tags[tag] = tags.get(tag, 0) + 1
                    return reply
                if fault.data_code is not None and self._data_code is None:
                    self._data_code = fault.data_code
                if fault.hangup:
                    self._hangup = True
        profile = server.profile
        if profile.stateful:
            refusal = profile.on_rcpt(self.ip, server.now(), first=not self._slot)
            if refusal is not None:
                server.refused(self.ip, refusal, self.counters)
                return refusal.reply
            self._slot = True
        self.n_rcpt += 1
        if server.ledger is not None:
            self._rcpts.append(address)
        return R.RECIPIENT_OK

    def _end_of_data(self, ev: smtp.EndOfData) -> smtp.Reply | None:
        server = self.server
        if ev.reject is not None:
            self._end_txn()
            return ev.reject
        c = self.counters
        if self._hangup or server.hangup_due():
            c.hangups += 1
            self._record(ev.size, acknowledged=False)
            self._end_txn()
            self._held = True
            self._must_close = True
            return None
        code = self._data_code
        if code is not None:
            tags = c.tags
            tag = f"d{code}"
            tags[tag] = tags.get(tag, 0) + 1
            self._end_txn()
            return fault_reply(code)
        size = ev.size
        delay = server.faults.final_reply_delay
        if delay > 0:
            self._held = True
            self._delayed_size = size
            self._delay_handle = asyncio.get_running_loop().call_later(
                delay, self._send_delayed, size
            )
            return None
        self._accepted(size, c)
        return server.accepted

    def _accepted(self, size: int, c: SourceCounters) -> None:
        server = self.server
        now = server.now()
        if self._slot:
            self._slot = False
            server.profile.on_accept(self.ip, now)
        c.messages += 1
        c.recipients += self.n_rcpt
        c.message_bytes += size
        if c.first_message_at is None:
            c.first_message_at = now
        c.last_message_at = now
        times = c.message_times
        if times is not None:
            times.append(now)
        if server.ledger is not None:
            self._record(size, acknowledged=True)
        self._end_txn()

    def _send_delayed(self, size: int) -> None:
        self._delay_handle = None
        if self.closed:
            return
        c = self.counters
        self._accepted(size, c)
        reply = self.server.accepted
        self._write(self.conn.send(reply), reply.code, c)
        self._held = False
        self._pump()

    def _record(self, size: int, *, acknowledged: bool) -> None:
        ledger = self.server.ledger
        rec = self._recorder
        if ledger is None or rec is None:
            return
        message_id, test_seq, digest = rec.finish()
        ledger.add(
            LedgerEntry(
                at=self.server.now(),
                source_ip=self.ip,
                mail_from=self._mail_from,
                recipients=tuple(self._rcpts),
                message_id=message_id,
                test_seq=test_seq,
                body_sha256=digest,
                size=size,
                acknowledged=acknowledged,
            )
        )
        self._recorder = None
