"""Test helpers for the SMTP engine: a default server policy, a driver, a client/server pair,
and h11's ``tr()`` (feed a reader whole, one byte at a time, and with trailing junk)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sluice import smtp
from sluice.smtp import replies as R
from sluice.smtp._receivebuffer import ReceiveBuffer

ALL_EXTENSIONS = (
    "PIPELINING",
    "SIZE 10240000",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "SMTPUTF8",
    "DSN",
    "CHUNKING",
    "STARTTLS",
    "AUTH PLAIN",
)
HOST = "mx.test"


def default_reply(
    ev: smtp.Event, extensions: tuple[str, ...] = ALL_EXTENSIONS
) -> smtp.Reply | None:
    """A permissive application: accept everything, answer engine refusals as suggested."""
    match ev:
        case smtp.Ehlo():
            return R.ehlo_reply(HOST, extensions)
        case smtp.Helo():
            return R.helo_reply(HOST)
        case smtp.MailFrom():
            return R.SENDER_OK
        case smtp.RcptTo():
            return R.RECIPIENT_OK
        case smtp.Data():
            return R.START_MAIL_INPUT
        case smtp.EndOfData():
            return ev.reject or R.message_accepted("Q1")
        case smtp.EndOfChunk():
            return ev.reject or R.OK
        case smtp.BadCommand():
            return ev.reply
        case smtp.Quit():
            return R.closing(HOST)
        case smtp.Vrfy():
            return R.CANNOT_VRFY
        case smtp.Help():
            return R.HELP
        case smtp.StartTls():
            return R.READY_TO_START_TLS
        case smtp.Auth() | smtp.AuthResponse():
            return smtp.Reply.of(235, "2.7.0", "Authentication successful")
        case smtp.Rset() | smtp.Noop():
            return R.OK
    return None


@dataclass
class Transcript:
    """What a driven server saw and said."""

    events: list[smtp.Event] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)
    #: Bodies of messages whose EndOfData was accepted (reject is None).
    messages: list[bytes] = field(default_factory=list)
    #: Every EndOfData event (accepted or not).
    ends: list[smtp.EndOfData] = field(default_factory=list)
    _chunks: list[bytes] = field(default_factory=list)

    @property
    def codes(self) -> list[int]:
        return [int(r[:3]) for r in self.replies]

    def of(self, kind: type[smtp.Event]) -> list[smtp.Event]:
        return [e for e in self.events if isinstance(e, kind)]


Policy = Callable[[smtp.Event], "smtp.Reply | None"]


def drain(
    conn: smtp.Connection, t: Transcript, policy: Policy = default_reply
) -> smtp.Signal | None:
    """Answer events until the engine needs data, pauses with nothing owed, or closes."""
    while True:
        ev = conn.next_event()
        if isinstance(ev, smtp.Signal):
            return ev
        t.events.append(ev)
        if isinstance(ev, smtp.ConnectionClosed):
            return None
        if isinstance(ev, smtp.DataChunk):
            t._chunks.append(ev.data)
            continue
        if isinstance(ev, smtp.Bdat):
            continue
        if isinstance(ev, smtp.EndOfData):
            t.ends.append(ev)
            body = b"".join(t._chunks)
            t._chunks.clear()
            if ev.reject is None:
                t.messages.append(body)
        reply = policy(ev)
        assert reply is not None, ev
        t.replies.append(conn.send(reply))
        if conn.state in (smtp.State.CLOSED, smtp.State.TLS_HANDOFF):
            return None


def feed(
    conn: smtp.Connection,
    data: bytes,
    t: Transcript | None = None,
    policy: Policy = default_reply,
    *,
    eof: bool = False,
) -> Transcript:
    t = t if t is not None else Transcript()
    if data:
        conn.receive_data(data)
    drain(conn, t, policy)
    if eof:
        conn.receive_data(b"")
        drain(conn, t, policy)
    return t


def new_server(
    *, ehlo: bool = True, extensions: tuple[str, ...] = ALL_EXTENSIONS, **kwargs: object
) -> smtp.Connection:
    conn = smtp.Connection(smtp.SERVER, **kwargs)  # type: ignore[arg-type]
    conn.send(R.greeting(HOST))
    if ehlo:
        feed(conn, b"EHLO client.test\r\n", policy=lambda ev: default_reply(ev, extensions))
        assert conn.state is smtp.State.READY
    return conn


def in_data(**kwargs: object) -> smtp.Connection:
    """A server Connection that has just sent 354."""
    conn = new_server(**kwargs)
    t = feed(conn, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    assert t.codes == [250, 250, 354], t.codes
    assert conn.state is smtp.State.DATA
    return conn


def bad_replies(t: Transcript) -> list[smtp.Reply]:
    return [e.reply for e in t.of(smtp.BadCommand) if isinstance(e, smtp.BadCommand)]


def tr(read: Callable[[ReceiveBuffer], object], data: bytes, expected: object) -> None:
    """h11's tr(): the reader gives ``expected`` for ``data`` fed whole, one byte at a time,
    and with trailing junk (which it must leave in the buffer)."""
    buf = ReceiveBuffer()
    buf.append(data)
    assert read(buf) == expected
    assert not buf

    buf = ReceiveBuffer()
    got: object = None
    for i in range(len(data)):
        buf.append(data[i : i + 1])
        got = read(buf)
        if got is not None:
            assert i == len(data) - 1, f"result after {i + 1} of {len(data)} bytes"
    assert got == expected

    buf = ReceiveBuffer()
    buf.append(data + b"junk\r\n")
    assert read(buf) == expected
    assert bytes(buf.data) == b"junk\r\n"
