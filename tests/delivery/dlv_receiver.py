"""A scripted SMTP receiver for delivery tests, on sluice.smtp's SERVER role and asyncio.

It runs in the test's own event loop, listens on a loopback address and a free port, and
records what each connection sent (the raw bytes, the peer address, every transaction).
Replies come from a :class:`Script`: per-recipient replies, the greeting, the EHLO
extensions, and what to do at the final dot (reply, hang up, hang, reply then hang up).

It uses the sans-IO engine under test in the other role; the raw-byte checks (T08) do not
depend on the engine's parsing, and the interop tests use Postfix's smtp-sink instead.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field

from sluice import smtp
from sluice.smtp import replies as R

DEFAULT_EXTENSIONS = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN")


class AtDot(enum.Enum):
    """What the receiver does when the final dot arrives."""

    #: Reply with ``Script.dot_reply``.
    REPLY = "reply"
    #: Close the connection without a reply.
    HANG_UP = "hang-up"
    #: Never reply (the client's data-termination timeout fires).
    HANG = "hang"
    #: Reply, then close at once (before QUIT).
    REPLY_THEN_HANG_UP = "reply-then-hang-up"


@dataclass
class Script:
    greeting: smtp.Reply = field(default_factory=lambda: R.greeting("mx.test"))
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    #: EHLO reply code override (e.g. 502 to force HELO).
    ehlo_code: int | None = None
    helo_code: int | None = None
    mail_reply: smtp.Reply | None = None
    #: address → reply to its RCPT (default 250).
    rcpt: dict[str, smtp.Reply] = field(default_factory=dict)
    dot_reply: smtp.Reply = field(default_factory=lambda: R.message_accepted("Q1"))
    at_dot: AtDot = AtDot.REPLY
    #: Apply ``at_dot`` only to the first N messages (then reply normally); None: always.
    at_dot_times: int | None = None
    #: Stop reading after the 354 (the client's send buffer fills: data-send-timeout).
    stall_content: bool = False
    #: sender → reply to its MAIL (overrides ``mail_reply``).
    senders: dict[str, smtp.Reply] = field(default_factory=dict)
    #: The n-th final dot (from 1) gets ``dot_replies[n - 1]`` (then ``dot_reply``).
    dot_replies: tuple[smtp.Reply, ...] = ()
    #: The n-th final dot is met with ``dot_actions[n - 1]`` (then ``at_dot``).
    dot_actions: tuple[AtDot, ...] = ()
    #: Seconds to wait before replying to a final dot (nothing else is answered meanwhile).
    dot_delay: float = 0.0


@dataclass
class Received:
    peer: tuple[str, int]
    helo: str = ""
    sender: str = ""
    mail: smtp.MailFrom | None = None
    rcpts: list[str] = field(default_factory=list)
    data: bytes = b""


class _Server(asyncio.Protocol):
    def __init__(self, receiver: Receiver) -> None:
        self.r = receiver
        self.conn = smtp.Connection(smtp.SERVER, forbid_unauth_pipelining=True)
        self.transport: asyncio.Transport | None = None
        self.raw = bytearray()
        self.current: Received | None = None
        self.chunks: list[bytes] = []
        self.helo = ""
        self.peer: tuple[str, int] = ("", 0)
        #: A delayed reply to a final dot is pending: answer nothing until it is sent.
        self.held = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")[:2]
        self.r.peers.append(self.peer)
        self.r.protocols.append(self)
        self.r.raw.append(self.raw)
        greeting = self.r.script.greeting
        transport.write(self.conn.send(greeting))
        if greeting.code == 421:
            transport.close()

    def data_received(self, data: bytes) -> None:
        self.r.reads += 1
        self.raw += data
        self.conn.receive_data(data)
        self.pump()

    def pump(self) -> None:
        conn = self.conn
        while not self.held and self.transport is not None and not self.transport.is_closing():
            try:
                ev = conn.next_event()
            except smtp.RemoteProtocolError as exc:
                self.r.errors.append(str(exc))
                self.transport.write(conn.send(exc.reply))
                self.transport.close()
                return
            if ev is smtp.NEED_DATA or ev is smtp.PAUSED:
                return
            reply = self.answer(ev)
            if reply is None:
                continue
            self.transport.write(conn.send(reply))
            if reply.code == 421 or conn.state is smtp.State.CLOSED:
                self.transport.close()
                return

    def answer(self, ev: smtp.Event) -> smtp.Reply | None:
        s = self.r.script
        match ev:
            case smtp.Ehlo():
                self.helo = ev.domain
                if s.ehlo_code is not None:
                    return smtp.Reply(code=s.ehlo_code, lines=("no EHLO here",))
                return R.ehlo_reply("mx.test", list(s.extensions))
            case smtp.Helo():
                self.helo = ev.domain
                if s.helo_code is not None:
                    return smtp.Reply(code=s.helo_code, lines=("no HELO either",))
                return R.helo_reply("mx.test")
            case smtp.MailFrom():
                self.current = Received(peer=self.peer, helo=self.helo, sender=ev.address, mail=ev)
                return s.senders.get(ev.address) or s.mail_reply or R.SENDER_OK
            case smtp.RcptTo():
                reply = s.rcpt.get(ev.address, R.RECIPIENT_OK)
                if reply.code < 300 and self.current is not None:
                    self.current.rcpts.append(ev.address)
                return reply
            case smtp.Data():
                self.chunks = []
                if s.stall_content and self.transport is not None:
                    self.transport.pause_reading()
                return R.START_MAIL_INPUT
            case smtp.DataChunk():
                self.chunks.append(ev.data)
                return None
            case smtp.EndOfData():
                return self.end_of_data(ev)
            case smtp.BadCommand():
                return ev.reply
            case smtp.Quit():
                self.r.quits += 1
                return R.closing("mx.test")
            case smtp.ConnectionClosed():
                if self.transport is not None:
                    self.transport.close()
                return None
            case _:
                return R.OK

    def end_of_data(self, ev: smtp.EndOfData) -> smtp.Reply | None:
        s = self.r.script
        assert self.transport is not None
        msg = self.current
        self.current = None
        if msg is not None:
            msg.data = b"".join(self.chunks)
        self.r.dots += 1
        n = self.r.dots
        action = s.at_dot
        if s.at_dot_times is not None and n > s.at_dot_times:
            action = AtDot.REPLY
        if n <= len(s.dot_actions):
            action = s.dot_actions[n - 1]
        dot_reply = s.dot_replies[n - 1] if n <= len(s.dot_replies) else s.dot_reply
        if ev.reject is not None:
            return ev.reject
        if action is AtDot.HANG_UP:
            if msg is not None:
                self.r.unacknowledged.append(msg)
            self.transport.abort()
            return None
        if action is AtDot.HANG:
            if msg is not None:
                self.r.unacknowledged.append(msg)
            return None
        if msg is not None and dot_reply.code < 300:
            self.r.messages.append(msg)
        if action is AtDot.REPLY_THEN_HANG_UP:
            self.transport.write(self.conn.send(dot_reply))
            self.transport.close()
            return None
        if s.dot_delay:
            self.held = True
            asyncio.get_running_loop().call_later(s.dot_delay, self.release, dot_reply)
            return None
        return dot_reply

    def release(self, reply: smtp.Reply) -> None:
        """Send the delayed reply to a final dot, then answer what waited behind it."""
        self.held = False
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(self.conn.send(reply))
        if reply.code == 421:
            self.transport.close()
            return
        self.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class Receiver:
    """``async with Receiver(script, host) as rx:`` — listening on ``rx.port``."""

    def __init__(
        self, script: Script | None = None, host: str = "127.0.0.5", port: int = 0
    ) -> None:
        self.script = script if script is not None else Script()
        self.host = host
        self.port = port
        self.peers: list[tuple[str, int]] = []
        self.raw: list[bytearray] = []
        self.messages: list[Received] = []
        self.unacknowledged: list[Received] = []
        self.errors: list[str] = []
        self.dots = 0
        self.quits = 0
        #: Reads on every connection (a client write arrives as one read here: the client
        #: waits for replies between writes, so they cannot merge).
        self.reads = 0
        self.protocols: list[_Server] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Receiver:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Server(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for proto in self.protocols:
            if proto.transport is not None:
                proto.transport.abort()
        await self._server.wait_closed()
        await asyncio.sleep(0)
