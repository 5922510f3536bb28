"""sluice.smtp — the sans-IO SMTP engine (RFC 5321 and extensions), one core for both roles.

Bytes in, events out; events in, bytes out. No sockets, no asyncio, no clock: the intake
listener and the delivery client drive a :class:`Connection` over their own transports.

Server role (intake)
--------------------
::

    from sluice import smtp
    from sluice.smtp import replies as R

    conn = smtp.Connection(smtp.SERVER, limits=smtp.Limits(max_message_size=20_000_000))
    transport.write(conn.send(R.greeting("mx.example.com")))     # first, before reading

    def data_received(data):                  # b"" at EOF (eof_received)
        conn.receive_data(data)
        while True:
            try:
                ev = conn.next_event()
            except smtp.RemoteProtocolError as exc:   # fatal: answer and close
                transport.write(conn.send(exc.reply)); transport.close(); return
            match ev:
                case smtp.NEED_DATA: return                  # wait for more bytes
                case smtp.PAUSED: return                     # a reply is owed (async policy)
                case smtp.Ehlo():  reply = R.ehlo_reply("mx.example.com",
                                       ["PIPELINING", "SIZE 20000000", "8BITMIME",
                                        "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN", "CHUNKING"])
                case smtp.MailFrom() | smtp.RcptTo(): reply = policy(ev)
                case smtp.Data():  reply = R.START_MAIL_INPUT
                case smtp.Bdat():  continue                   # its chunk follows; no reply yet
                case smtp.DataChunk(): spool.append(ev.data); continue   # no reply
                case smtp.EndOfData() | smtp.EndOfChunk():
                    reply = ev.reject or store_durably()      # reject ≠ None: discard, refuse
                case smtp.BadCommand(): reply = ev.reply      # recoverable: session goes on
                case smtp.Vrfy(): reply = R.CANNOT_VRFY
                case smtp.Quit(): reply = R.closing("mx.example.com")
                case smtp.ConnectionClosed(): transport.close(); return
                case _: reply = R.OK                          # Rset, Noop, Helo, Help ...
            transport.write(conn.send(reply))
            if conn.state is smtp.State.TLS_HANDOFF:
                leftover, _ = conn.trailing_data              # non-empty: CVE-2011-0411, close
                ... start TLS, then conn = smtp.Connection(smtp.SERVER, after_starttls=True)
            if conn.state is smtp.State.CLOSED: transport.close(); return

Every command event (and EndOfData, EndOfChunk, BadCommand) owes exactly one reply, and
``next_event`` returns PAUSED until it is sent, so pipelined commands are judged in order
against the state the earlier replies produced. The application decides the replies; the
engine decides only protocol matters, as BadCommand events (bad syntax 501, sequence 503,
line too long 500, unsupported parameter 555, SIZE over the limit 552 5.3.4, recipients over
``Limits.max_recipients`` 452 4.5.3, non-ASCII without SMTPUTF8 553 5.6.7). Fatal faults raise
RemoteProtocolError with ``reply`` (a line flood with no CRLF, talking before the greeting or
before a reply it had to wait for, a bare LF/CR in DATA content under the reject policy).

DATA content ends only at ``<CRLF>.<CRLF>``; DataChunk carries dot-unstuffed CRLF content
(usually one chunk per ``receive_data``) to hand on without copying; EndOfData carries the
size and ``reject`` (552 5.3.4 too big — the engine stops passing content once over the
limit —, 554 5.6.0 NUL, 554 5.6.0 line over 998 octets under LongLinePolicy.REJECT).

Client role (delivery)
----------------------
::

    conn = smtp.Connection(smtp.CLIENT)
    conn.receive_data(bytes_from_server); conn.next_event()   # ReplyReceived(greeting, None)
    w(conn.send(smtp.Ehlo(domain="out.example.com")))         # 5xx → send Helo instead
    ... ReplyReceived(reply, command=Ehlo(...)); conn.extensions has the keywords
    w(conn.send(smtp.MailFrom(address="a@x", size=len(body))) +
      b"".join(conn.send(smtp.RcptTo(address=r)) for r in rcpts) + conn.send(smtp.Data()))
    for each reply: ReplyReceived(reply, command=<the MailFrom/RcptTo/Data it answers>)
    after the 354: w(conn.send(smtp.DataChunk(data=body)) + conn.send(smtp.EndOfData()))
    ReplyReceived(final reply, command=EndOfData()); then MailFrom again (reuse) or Quit.

``check_body(body)`` says up front whether a body can be sent (no NUL, no line over 998
octets); sending one that cannot raises LocalProtocolError before its bytes are returned.
Bare CR/LF in a body are converted to CRLF and dots are stuffed on the way out.

Public names: Connection, Role, CLIENT, SERVER, State, Input, the events (Ehlo, Helo,
MailFrom, RcptTo, Data, Bdat, Rset, Noop, Quit, Vrfy, Help, StartTls, Auth, AuthResponse,
DataChunk, EndOfData, EndOfChunk, BadCommand, ReplyReceived, ConnectionClosed, Event), the
signals NEED_DATA and PAUSED, Reply, EnhancedStatus, Limits, BareLineEnding, LongLinePolicy,
LocalProtocolError, RemoteProtocolError, check_body, the modules ``replies`` and ``limits``.
"""

from __future__ import annotations

from sluice.smtp import limits, replies
from sluice.smtp._client import ClientConnection
from sluice.smtp._connection import Connection
from sluice.smtp._content import check_body
from sluice.smtp._errors import LocalProtocolError, RemoteProtocolError
from sluice.smtp._events import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    Command,
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
    ReplyReceived,
    Rset,
    Signal,
    StartTls,
    Vrfy,
)
from sluice.smtp._server import ServerConnection
from sluice.smtp._state import CLIENT, SERVER, Input, Role, State
from sluice.smtp.limits import BareLineEnding, Limits, LongLinePolicy
from sluice.smtp.replies import EnhancedStatus, Reply, parse_reply

__all__ = [
    "CLIENT",
    "NEED_DATA",
    "PAUSED",
    "SERVER",
    "Auth",
    "AuthResponse",
    "BadCommand",
    "BareLineEnding",
    "Bdat",
    "ClientConnection",
    "Command",
    "Connection",
    "ConnectionClosed",
    "Data",
    "DataChunk",
    "Ehlo",
    "EndOfChunk",
    "EndOfData",
    "EnhancedStatus",
    "Event",
    "Helo",
    "Help",
    "Input",
    "Limits",
    "LocalProtocolError",
    "LongLinePolicy",
    "MailFrom",
    "Noop",
    "Quit",
    "RcptTo",
    "RemoteProtocolError",
    "Reply",
    "ReplyReceived",
    "Role",
    "Rset",
    "ServerConnection",
    "Signal",
    "StartTls",
    "State",
    "Vrfy",
    "check_body",
    "limits",
    "parse_reply",
    "replies",
]
