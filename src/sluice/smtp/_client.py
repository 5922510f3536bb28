"""The client role of Connection: command events in → bytes out; reply bytes in → events out.

The caller drives it::

    conn = Connection(our_role=CLIENT)
    on bytes: conn.receive_data(data); ev = conn.next_event()  → ReplyReceived(reply, command)
    first the greeting (command None); then write(conn.send(Ehlo(domain=...))) and so on.
    With PIPELINING: send MailFrom, every RcptTo and Data back to back, write them at once;
    the replies come back as ReplyReceived events naming the command each answers.
    After the 354: write(conn.send(DataChunk(data=body))); write(conn.send(EndOfData())).
    Next message on the same connection: MailFrom again (or Rset first); finally Quit.

What the engine guarantees on the wire: commands are only sent in sequence (the shared
state table, judged optimistically while replies are outstanding) and only pipelined when
the server advertised PIPELINING and the group may go on (RFC 2920 §3.1); parameters only
for advertised extensions; content in canonical CRLF, dot-stuffed, no NUL and no line over
998 octets (LocalProtocolError before any byte of the offending piece is returned: check a
body with ``check_body`` first and wrap or refuse it). The engine does not choose HELO after
a failed EHLO; the caller sends Helo when the EHLO reply is a 5xx.

Public names: ClientConnection (reach it as ``Connection(our_role=CLIENT)``).
"""

from __future__ import annotations

from typing import NoReturn

from sluice.smtp._connection import Connection
from sluice.smtp._content import BodyEncoder, has_bare_line_ending, longest_line_exceeds
from sluice.smtp._errors import LocalProtocolError, RemoteProtocolError
from sluice.smtp._events import (
    INPUT_OF,
    NEED_DATA,
    PAUSED,
    Bdat,
    ConnectionClosed,
    DataChunk,
    EndOfData,
    Event,
    MailFrom,
    RcptTo,
    ReplyReceived,
    Signal,
    StartTls,
)
from sluice.smtp._grammar import parse_ehlo_extensions
from sluice.smtp._pipeline import Pipeline
from sluice.smtp._readers import ReplyReader
from sluice.smtp._state import CLIENT, TRANSITIONS, Input, Role, State, is_valid, next_state
from sluice.smtp._writers import write_command
from sluice.smtp.limits import BareLineEnding, Limits, LongLinePolicy
from sluice.smtp.replies import Reply, parse_reply

__all__ = ["ClientConnection"]

_CLOSED = ConnectionClosed()
_MAX_CONTENT_LINE = 998


class ClientConnection(Connection):
    """Client half; see the module docstring."""

    role = CLIENT

    __slots__ = (
        "_bdat_remaining",
        "_encoder",
        "_extensions",
        "_pipeline",
        "_reader",
        "_send_state",
        "_send_utf8",
        "_utf8",
    )

    def __init__(
        self,
        our_role: Role | None = None,
        *,
        limits: Limits | None = None,
        bare_line_ending: BareLineEnding = BareLineEnding.REJECT,
        long_lines: LongLinePolicy = LongLinePolicy.REJECT,
        forbid_unauth_pipelining: bool = True,
        after_starttls: bool = False,
    ) -> None:
        super().__init__(our_role, limits=limits)
        self._pipeline = Pipeline()
        self._reader = ReplyReader(self.limits.line_scan_limit)
        self._extensions: dict[str, str] = {}
        self._encoder: BodyEncoder | None = None
        self._bdat_remaining = 0
        self._utf8 = False
        self._send_utf8 = False
        if after_starttls:
            self._state = State.GREETED
        else:
            self._state = State.GREETING
            self._pipeline.push(Input.GREETING, None)
        self._send_state = self._state

    # -- properties ------------------------------------------------------------------------

    @property
    def extensions(self) -> dict[str, str]:
        """EHLO keywords the server advertised (upper-cased) → their parameters."""
        return dict(self._extensions)

    @property
    def in_flight(self) -> tuple[Input, ...]:
        """Commands sent and not yet answered, oldest first."""
        return self._pipeline.commands

    @property
    def can_send_content(self) -> bool:
        """The 354 came: DataChunk and EndOfData may be sent."""
        return self._encoder is not None

    # -- send ------------------------------------------------------------------------------

    def send(self, event: Event | Reply) -> bytes:
        """A command, DataChunk or EndOfData → bytes to write. Raises LocalProtocolError
        (state → ERROR) for anything out of sequence or not sendable."""
        if self._state in (State.ERROR, State.CLOSED, State.TLS_HANDOFF):
            self._misuse(f"cannot send in state {self._state.name}")
        if isinstance(event, DataChunk):
            return self._send_content(event.data)
        if isinstance(event, EndOfData):
            return self._send_end()
        if isinstance(event, Reply):
            self._misuse("a client does not send replies")
        if self._encoder is not None or self._bdat_remaining:
            self._misuse("message content is being sent: finish it first")
        command: Input | None
        if isinstance(event, Bdat):
            command = Input.BDAT_LAST if event.last else Input.BDAT
        else:
            command = INPUT_OF.get(type(event))
        if command is None or command is Input.END_OF_DATA:
            self._misuse(f"{type(event).__name__} is not a command")
        assert command is not None
        if not is_valid(self._send_state, command):
            self._misuse(f"{command.name} is out of sequence in state {self._send_state.name}")
        why = self._pipeline.may_add("PIPELINING" in self._extensions)
        if why is not None:
            self._misuse(why)
        self._check_extensions(event)
        try:
            data = write_command(event, utf8=self._send_utf8)
        except LocalProtocolError:
            self._state = State.ERROR
            raise
        self._pipeline.push(command, event)
        t = TRANSITIONS[self._send_state][command]
        self._send_state = t.on_2xx or t.on_3xx or self._send_state
        if isinstance(event, MailFrom):
            self._send_utf8 = event.smtputf8
        elif isinstance(event, Bdat):
            self._bdat_remaining = event.size
        return data

    def _misuse(self, message: str) -> NoReturn:
        self._state = State.ERROR
        raise LocalProtocolError(message)

    def _check_extensions(self, event: Event) -> None:
        ext = self._extensions
        need: list[str] = []
        if isinstance(event, MailFrom):
            if event.size is not None:
                need.append("SIZE")
            if event.body is not None and event.body != "7BIT":
                need.append("BINARYMIME" if event.body == "BINARYMIME" else "8BITMIME")
            if event.smtputf8:
                need.append("SMTPUTF8")
            if event.ret is not None or event.envid is not None:
                need.append("DSN")
            if event.auth is not None:
                need.append("AUTH")
        elif isinstance(event, RcptTo):
            if event.notify or event.orcpt is not None:
                need.append("DSN")
        elif isinstance(event, StartTls):
            need.append("STARTTLS")
        elif isinstance(event, Bdat):
            need.append("CHUNKING")
        missing = [n for n in need if n not in ext]
        if missing:
            self._misuse(f"the server did not advertise {', '.join(missing)}")

    def _send_content(self, data: bytes) -> bytes:
        if self._bdat_remaining:
            if len(data) > self._bdat_remaining:
                self._misuse("more content than the BDAT size announced")
            if b"\x00" in data or ((b"\r" in data or b"\n" in data) and has_bare_line_ending(data)):
                self._misuse("BDAT content must be canonical CRLF without NUL")
            if longest_line_exceeds(data, 0, _MAX_CONTENT_LINE)[0]:
                self._misuse("BDAT content has a line over 998 octets")
            self._bdat_remaining -= len(data)
            return data
        encoder = self._encoder
        if encoder is None:
            self._misuse("no 354 yet: message content cannot be sent")
        assert encoder is not None
        try:
            return encoder.encode(data)
        except LocalProtocolError:
            self._state = State.ERROR
            raise

    def _send_end(self) -> bytes:
        encoder = self._encoder
        if encoder is None:
            self._misuse("EndOfData without an open DATA")
        assert encoder is not None
        self._encoder = None
        self._pipeline.push(Input.END_OF_DATA, EndOfData())
        self._send_state = State.READY
        self._send_utf8 = False
        return encoder.finish()

    # -- next_event ------------------------------------------------------------------------

    def next_event(self) -> Event | Signal:
        if self._error is not None:
            raise self._error
        state = self._state
        if state is State.ERROR:
            raise LocalProtocolError("the connection is in state ERROR after a local error")
        if state is State.CLOSED:
            return _CLOSED
        if state is State.TLS_HANDOFF:
            return PAUSED
        try:
            lines = self._reader.read(self._buf)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        if lines is None:
            if self._eof:
                self._state = State.CLOSED
                self._pipeline.clear()
                return _CLOSED
            return NEED_DATA if self._pipeline else PAUSED
        try:
            reply = parse_reply(lines)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        return self._on_reply(reply)

    def _on_reply(self, reply: Reply) -> Event:
        item = self._pipeline.pop()
        code = reply.code
        if item is None:
            if code == 421:  # RFC 5321 §3.8: the server may close at any time
                self._state = State.CLOSED
                return ReplyReceived(reply=reply, command=None)
            raise self._fail(RemoteProtocolError(f"unsolicited reply {code}"))
        state = self._state
        command = item.command
        if is_valid(state, command):
            try:
                new = next_state(state, command, code, strict=False)
            except LocalProtocolError:
                raise self._fail(
                    RemoteProtocolError(f"{code} is not a valid reply to {command.name}")
                ) from None
        else:
            new = State.CLOSED if code == 421 else state
        if code < 400:
            self._apply(command, item.event, reply, new)
        elif command in (Input.BDAT, Input.BDAT_LAST):
            self._bdat_remaining = 0
        if new is State.CLOSED:
            self._pipeline.clear()
        self._state = new
        if not self._pipeline:
            self._send_state = new
        return ReplyReceived(reply=reply, command=item.event)

    def _apply(self, command: Input, event: Event | None, reply: Reply, new: State) -> None:
        if command is Input.EHLO:
            self._extensions = parse_ehlo_extensions(reply.lines)
        elif command is Input.HELO:
            self._extensions = {}
        elif command is Input.MAIL:
            self._utf8 = isinstance(event, MailFrom) and event.smtputf8
        elif command is Input.DATA and new is State.DATA:
            self._encoder = BodyEncoder()
