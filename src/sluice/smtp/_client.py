"""The client role of Connection: command events in → bytes out; reply bytes in → events out.

The caller drives it::

    conn = Connection(our_role=CLIENT)
    on bytes: conn.receive_data(data); ev = conn.next_event()  → ReplyReceived(reply, command)
    first the greeting (command None); then write(conn.send(Ehlo(domain=...))) and so on.
    With PIPELINING: send MailFrom, every RcptTo and Data back to back, write them at once;
    the replies come back as ReplyReceived events naming the command each answers.
    After the 354: write(conn.send(DataChunk(data=body))); write(conn.send(EndOfData())).
    Next message on the same connection: MailFrom again (or Rset first); finally Quit.
    With PIPELINING the next message's MAIL (or RSET), RCPTs and DATA may follow the final
    dot at once, before its reply (RFC 2920 §3.1: content may open a group, DATA ends one):
    the dot's reply then comes first, then theirs.

What the engine guarantees on the wire: commands are only sent in sequence (the shared
state table, judged optimistically while replies are outstanding) and only pipelined when
the server advertised PIPELINING and the group may go on (RFC 2920 §3.1); parameters only
for advertised extensions; content in canonical CRLF, dot-stuffed, no NUL and no line over
998 octets (LocalProtocolError before any byte of the offending piece is returned: check a
body with ``check_body`` first and wrap or refuse it). The engine does not choose HELO after
a failed EHLO; the caller sends Helo when the EHLO reply is a 5xx.

The common path is kept short without giving up any of that: MAIL, RCPT, DATA and RSET
skip the general dispatch when nothing is unusual (the general path still raises for
anything that is); a body checked with :meth:`ClientConnection.check_content` is not
scanned again when that same bytes object is sent (``send_message_parts`` hands it back
as it is, for the caller to join with what follows in one copy); a one-line reply to MAIL,
RCPT, DATA or RSET already parsed on this connection is recognised by its bytes;
``read_replies`` takes every buffered reply in one call. ``send_group`` sends a whole
pipelined group, or (a command that cannot be written) none of it.

Public names: ClientConnection (reach it as ``Connection(our_role=CLIENT)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

from sluice.message.envelope import Notify
from sluice.smtp._connection import Connection
from sluice.smtp._content import (
    BodyEncoder,
    has_bare_line_ending,
    inspect_body,
    longest_line_exceeds,
)
from sluice.smtp._errors import LocalProtocolError, RemoteProtocolError
from sluice.smtp._events import (
    INPUT_OF,
    NEED_DATA,
    PAUSED,
    Bdat,
    ConnectionClosed,
    Data,
    DataChunk,
    EndOfData,
    Event,
    MailFrom,
    RcptTo,
    ReplyReceived,
    Rset,
    Signal,
    StartTls,
)
from sluice.smtp._grammar import parse_ehlo_extensions
from sluice.smtp._pipeline import Pipeline
from sluice.smtp._readers import ReplyReader
from sluice.smtp._state import (
    CLIENT,
    ENDS_GROUP,
    TRANSITIONS,
    Input,
    Role,
    State,
    is_valid,
    next_state,
)
from sluice.smtp._writers import CommandNotWritable, write_command
from sluice.smtp.limits import BareLineEnding, Limits, LongLinePolicy
from sluice.smtp.replies import Reply, parse_reply

__all__ = ["ClientConnection"]

_CLOSED = ConnectionClosed()
_END_OF_DATA = EndOfData()
_NO_NOTIFY = Notify.NONE
_MAX_CONTENT_LINE = 998
#: States in which nothing may be sent.
_NO_SEND = frozenset({State.ERROR, State.CLOSED, State.TLS_HANDOFF})
#: The transaction commands that take the short way through ``send``.
_ENVELOPE_INPUT: dict[type[Event | Reply], Input] = {
    MailFrom: Input.MAIL,
    RcptTo: Input.RCPT,
    Data: Input.DATA,
    Rset: Input.RSET,
}
#: Replies to these are remembered by their bytes (servers answer them with a fixed text;
#: the reply to the final dot usually carries a queue id, so it is not kept).
_REMEMBERED = frozenset({Input.MAIL, Input.RCPT, Input.DATA, Input.RSET})
#: At most this many remembered replies per connection, each of at most this many octets
#: (a bound on memory a peer could make us spend; the usual ones are a few dozen octets).
_REMEMBERED_LIMIT = 64
_REMEMBERED_LINE = 200
#: Positive replies that change what the client knows beyond the state.
_APPLY_ON = frozenset({Input.EHLO, Input.HELO, Input.DATA})


class ClientConnection(Connection):
    """Client half; see the module docstring."""

    role = CLIENT

    __slots__ = (
        "_bdat_remaining",
        "_encoder",
        "_extensions",
        "_fifo",
        "_inspected",
        "_pipeline",
        "_pipelining",
        "_reader",
        "_reader_clean",
        "_remembered",
        "_scan_limit",
        "_send_state",
        "_send_utf8",
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
        #: ``self._pipeline.items``: the commands in flight, read on the per-reply path.
        self._fifo = self._pipeline.items
        self._scan_limit = self.limits.line_scan_limit
        self._reader = ReplyReader(self._scan_limit)
        #: The reader holds no part of a reply (so a whole line may be taken past it).
        self._reader_clean = True
        #: One-line replies seen on this connection: the line without CRLF → the Reply.
        self._remembered: dict[bytes, Reply] = {}
        self._extensions: dict[str, str] = {}
        #: ``"PIPELINING" in self._extensions``, kept with it.
        self._pipelining = False
        self._encoder: BodyEncoder | None = None
        #: The last body ``check_content`` found sendable and canonical (None otherwise).
        self._inspected: bytes | None = None
        self._bdat_remaining = 0
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

    # -- content check ---------------------------------------------------------------------

    def check_content(self, body: bytes) -> str | None:
        """Why ``body`` cannot be sent (``"nul"``, ``"long-line"``; see ``check_body``), or
        None. A body that can be sent as it is (canonical CRLF) is remembered, so that when
        this same bytes object is sent as the content its checks are not run again."""
        problem, canonical = inspect_body(body)
        self._inspected = body if problem is None and canonical and type(body) is bytes else None
        return problem

    # -- send ------------------------------------------------------------------------------

    def send(self, event: Event | Reply) -> bytes:
        """A command, DataChunk or EndOfData → bytes to write. Raises LocalProtocolError
        (state → ERROR) for anything out of sequence or not sendable."""
        if self._state not in _NO_SEND:
            cls = type(event)
            if cls is DataChunk:
                return self._send_content(event.data)  # type: ignore[union-attr]
            if cls is EndOfData:
                return self._send_end()
            command = _ENVELOPE_INPUT.get(cls)
            if command is not None and self._encoder is None and not self._bdat_remaining:
                state = self._send_state
                t = TRANSITIONS[state].get(command)
                fifo = self._fifo
                # Pipeline.may_add(...) is None: nothing in flight, or the group goes on.
                if t is not None and (
                    not fifo or (self._pipelining and fifo[-1][0] not in ENDS_GROUP)
                ):
                    # In sequence and allowed in the group: what is left is what the general
                    # path does after the same checks (DATA and RSET take no parameter).
                    assert isinstance(event, Event)
                    if command is Input.MAIL or command is Input.RCPT:
                        self._check_extensions(event)
                    try:
                        data = write_command(event, utf8=self._send_utf8)
                    except LocalProtocolError:
                        self._state = State.ERROR
                        raise
                    fifo.append((command, event))  # Pipeline.push
                    self._send_state = t.on_2xx or t.on_3xx or state
                    if command is Input.MAIL:
                        self._send_utf8 = event.smtputf8  # type: ignore[attr-defined]
                    return data
        return self._send_general(event)

    def send_message(self, body: bytes) -> bytes:
        """The whole content after the 354 and its end in one call: exactly
        ``send(DataChunk(data=body)) + send(EndOfData())``, raising as they do."""
        content, end = self.send_message_parts(body)
        return content + end

    def send_message_parts(self, body: bytes) -> tuple[bytes, bytes]:
        """:meth:`send_message` as its two pieces, the content (``body`` itself when it was
        checked with ``check_content`` and needs no dot-stuffing) and the end of data, so
        the caller can join them with the next group in one copy. Raises as it does."""
        if self._state in _NO_SEND:
            self._misuse(f"cannot send in state {self._state.name}")
        content = self._send_content(body)
        return content, self._send_end()  # the state is unchanged when content was returned

    def send_group(self, events: Iterable[Event], out: list[bytes]) -> None:
        """Send ``events`` as one pipelined group: each command's bytes, as ``send`` returns
        them, appended to ``out``. When a command's line cannot be written (a path or
        parameter the grammar refuses, or a line over its limit) it raises
        LocalProtocolError and leaves the connection and ``out`` as they were before the
        call, no command of the group sent, so the caller can drop that transaction and go
        on (e.g. after a final dot it already holds). Anything else ``send`` refuses (out of
        sequence, not pipelined, not advertised) raises as ``send`` does: state ERROR."""
        fifo = self._fifo
        mark = len(fifo)
        kept = len(out)
        state = self._state
        send_state = self._send_state
        send_utf8 = self._send_utf8
        send = self.send
        try:
            for event in events:
                out.append(send(event))
        except CommandNotWritable:
            # Nothing of the group has been handed out: take it back (Pipeline.push undone).
            while len(fifo) > mark:
                fifo.pop()
            del out[kept:]
            self._state = state
            self._send_state = send_state
            self._send_utf8 = send_utf8
            raise

    def _send_general(self, event: Event | Reply) -> bytes:
        if self._state in _NO_SEND:
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
        why = self._pipeline.may_add(self._pipelining)
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
            if (
                event.size is None
                and event.body is None
                and not event.smtputf8
                and event.ret is None
                and event.envid is None
                and event.auth is None
            ):
                return  # no parameter: nothing to be advertised
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
            if (event.notify is not _NO_NOTIFY and event.notify) or event.orcpt is not None:
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
            if data is self._inspected:
                return encoder.encode_inspected(data)
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
        self._inspected = None
        self._pipeline.push(Input.END_OF_DATA, _END_OF_DATA)
        self._send_state = State.READY
        self._send_utf8 = False
        return encoder.finish()

    # -- receive ---------------------------------------------------------------------------

    def next_event(self) -> Event | Signal:
        got = self._next()
        if isinstance(got, Reply):
            return ReplyReceived(reply=got, command=self._on_reply(got))
        return got

    def read_replies(self, out: list[Reply]) -> Event | Signal:
        """Every complete reply buffered now, appended to ``out`` oldest first (each moves
        the state as ``next_event`` does; ``out`` gets the replies, not ReplyReceived
        events); returns what ``next_event`` returns next: NEED_DATA, PAUSED or
        ConnectionClosed. Raises as ``next_event`` (the replies before the fault are in
        ``out``)."""
        while True:
            got = self._next()
            if not isinstance(got, Reply):
                return got
            self._on_reply(got)
            out.append(got)

    def _next(self) -> Reply | Event | Signal:
        """The next complete reply (its command not yet popped), or the event or signal."""
        if self._error is not None:
            raise self._error
        state = self._state
        if state in _NO_SEND:
            if state is State.ERROR:
                raise LocalProtocolError("the connection is in state ERROR after a local error")
            return _CLOSED if state is State.CLOSED else PAUSED
        buf = self._buf
        data = buf.data
        if not data:  # the reader would take nothing and ask for more
            return self._no_reply()
        fifo = self._fifo
        if self._reader_clean and fifo and fifo[0][0] in _REMEMBERED:
            # A reply seen before: the same line, taken whole. It passed every check the
            # reader makes (they depend only on the line), except the scan limit when it
            # came with a bare LF and now has CRLF: checked again.
            i = data.find(b"\n")
            if 0 < i <= self._scan_limit:
                known = self._remembered.get(bytes(data[: i - 1 if data[i - 1] == 13 else i]))
                if known is not None:
                    buf.discard(i + 1)
                    return known
        before = len(buf)
        try:
            lines = self._reader.read(buf)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        if lines is None:
            if len(buf) != before:
                self._reader_clean = False  # it took the first lines of a reply
            return self._no_reply()
        self._reader_clean = True
        try:
            reply = parse_reply(lines)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None
        if (
            len(lines) == 1
            and fifo
            and fifo[0][0] in _REMEMBERED
            and len(lines[0]) <= _REMEMBERED_LINE
            and len(self._remembered) < _REMEMBERED_LIMIT
        ):
            self._remembered[lines[0]] = reply
        return reply

    def _no_reply(self) -> Event | Signal:
        """No complete reply is buffered: closed at EOF, else wait for bytes or for us."""
        if self._eof:
            self._state = State.CLOSED
            self._fifo.clear()
            return _CLOSED
        return NEED_DATA if self._fifo else PAUSED

    def _on_reply(self, reply: Reply) -> Event | None:
        """Match ``reply`` to its command and move the state; the command's event."""
        fifo = self._fifo
        item = fifo.popleft() if fifo else None  # Pipeline.pop
        code = reply.code
        if item is None:
            if code == 421:  # RFC 5321 §3.8: the server may close at any time
                self._state = State.CLOSED
                return None
            raise self._fail(RemoteProtocolError(f"unsolicited reply {code}"))
        command, event = item
        state = self._state
        t = TRANSITIONS[state].get(command)
        if t is None:
            new = State.CLOSED if code == 421 else state
        else:
            # 2xx/3xx where the table has a target: what next_state answers, without asking.
            target = t.on_2xx if code < 300 else t.on_3xx if code < 400 else None
            if target is not None:
                new = target
            else:
                try:
                    new = next_state(state, command, code, strict=False)
                except LocalProtocolError:
                    raise self._fail(
                        RemoteProtocolError(f"{code} is not a valid reply to {command.name}")
                    ) from None
        if code < 400:
            if command in _APPLY_ON:
                self._apply(command, reply, new)
        elif command is Input.BDAT or command is Input.BDAT_LAST:
            self._bdat_remaining = 0
        if new is State.CLOSED:
            fifo.clear()
        self._state = new
        if not fifo:
            self._send_state = new
        return event

    def _apply(self, command: Input, reply: Reply, new: State) -> None:
        if command is Input.EHLO:
            self._extensions = parse_ehlo_extensions(reply.lines)
            self._pipelining = "PIPELINING" in self._extensions
        elif command is Input.HELO:
            self._extensions = {}
            self._pipelining = False
        elif command is Input.DATA and new is State.DATA:
            self._encoder = BodyEncoder()
