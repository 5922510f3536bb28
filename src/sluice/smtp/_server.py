"""The server role of Connection: command lines in → events out; Reply events in → bytes out.

The caller drives it::

    conn = Connection(our_role=SERVER, limits=Limits(max_message_size=...))
    write(conn.send(replies.greeting("mx.example")))
    on bytes: conn.receive_data(data); then loop:
        ev = conn.next_event()
        NEED_DATA → read more; PAUSED → a reply is owed (or TLS_HANDOFF: switch);
        a command / EndOfData / EndOfChunk / BadCommand → decide, write(conn.send(reply));
        DataChunk → hand ``ev.data`` to the spool (no reply); ConnectionClosed → close.

One reply is owed per command event (and per EndOfData/EndOfChunk/BadCommand), and
``next_event`` returns PAUSED until it is sent, so pipelined commands come out in order and
each is checked against the state its predecessors' replies produced. ``Bdat`` and
``DataChunk`` events owe nothing.

Public names: ServerConnection (reach it as ``Connection(our_role=SERVER)``).
"""

from __future__ import annotations

from typing import NoReturn

from sluice.smtp import replies as R
from sluice.smtp._commands import Session, bdat_size, parse_command, sequence_reply
from sluice.smtp._connection import Connection
from sluice.smtp._content import ContentScanner
from sluice.smtp._errors import LocalProtocolError, RemoteProtocolError
from sluice.smtp._events import (
    NEED_DATA,
    PAUSED,
    AuthResponse,
    BadCommand,
    Bdat,
    ConnectionClosed,
    DataChunk,
    EndOfChunk,
    EndOfData,
    Event,
    MailFrom,
    Signal,
)
from sluice.smtp._grammar import parse_ehlo_extensions
from sluice.smtp._readers import ChunkReader, DataReader
from sluice.smtp._state import ENDS_GROUP, SERVER, Input, Role, State, is_valid, next_state
from sluice.smtp.limits import BareLineEnding, Limits, LongLinePolicy
from sluice.smtp.replies import Reply

__all__ = ["ServerConnection"]

_CLOSED = ConnectionClosed()
_OWED_INPUT_FOR_END = {True: Input.BDAT_LAST, False: Input.BDAT}

# Module-level names for the states and inputs the hot paths compare against (a global
# load is cheaper than an Enum class attribute).
_ST_GREETING = State.GREETING
_ST_DATA = State.DATA
_ST_AUTH = State.AUTH
_ST_TLS_HANDOFF = State.TLS_HANDOFF
_ST_CLOSED = State.CLOSED
_ST_ERROR = State.ERROR
_IN_EHLO = Input.EHLO
_IN_HELO = Input.HELO
_IN_MAIL = Input.MAIL
_IN_RCPT = Input.RCPT
_IN_DATA = Input.DATA
_IN_RSET = Input.RSET
_IN_END_OF_DATA = Input.END_OF_DATA
_IN_BDAT = Input.BDAT
_IN_BDAT_LAST = Input.BDAT_LAST

#: EHLO reply lines → the extensions they advertise. A server sends the same EHLO reply to
#: every client of a policy, so it is parsed once; the dicts are shared and never mutated.
_ehlo_memo: dict[tuple[str, ...], dict[str, str]] = {}
_EHLO_MEMO_LIMIT = 64


def _advertised(lines: tuple[str, ...]) -> dict[str, str]:
    extensions = _ehlo_memo.get(lines)
    if extensions is None:
        extensions = parse_ehlo_extensions(lines)
        if len(_ehlo_memo) < _EHLO_MEMO_LIMIT:
            _ehlo_memo[lines] = extensions
    return extensions


class ServerConnection(Connection):
    """Server half; see the module docstring."""

    role = SERVER

    __slots__ = (
        "_after_chunk",
        "_bytes",
        "_chunk_scanner",
        "_early",
        "_owed",
        "_pending",
        "_pending_event",
        "_queued",
        "_reader",
        "_s",
        "_sync_error",
        "bare_line_ending",
        "forbid_unauth_pipelining",
        "long_lines",
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
        self.bare_line_ending = bare_line_ending
        self.long_lines = long_lines
        self.forbid_unauth_pipelining = forbid_unauth_pipelining
        self._s = Session(self.limits, bare_line_ending)
        self._s.state = State.GREETED if after_starttls else State.GREETING
        # The receive buffer's bytearray (never replaced): its truth is "bytes pending".
        self._bytes = self._buf.data
        self._owed = False
        self._pending: Input | None = None
        self._pending_event: Event | None = None
        self._queued: Event | None = None
        self._reader: DataReader | ChunkReader | None = None
        self._chunk_scanner: ContentScanner | None = None
        self._after_chunk: BadCommand | None = None
        self._early = False
        self._sync_error = False

    # -- properties ------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._s.state

    @property
    def extensions(self) -> dict[str, str]:
        """The extensions advertised in the EHLO reply we sent (keyword → parameters)."""
        return dict(self._s.extensions)

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet consumed (see :attr:`Connection.buffered_bytes`)."""
        return len(self._bytes)

    @property
    def awaiting_reply(self) -> bool:
        """A reply is owed for the last event."""
        return self._owed or self._s.state is State.GREETING

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client; ``b""`` means it closed its side."""
        if data:
            if self._eof:
                raise LocalProtocolError("received data after end of file")
            if self._s.state is _ST_GREETING:
                self._early = True  # RFC 5321 §4.3.1: the client waits for the greeting
            self._bytes += data
        else:
            self._eof = True

    def _fail(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        self._error = exc
        self._s.state = State.ERROR
        self._owed = False
        return exc

    # -- next_event ------------------------------------------------------------------------

    def next_event(self) -> Event | Signal:
        if self._error is not None:
            raise self._error
        state = self._s.state
        if state is _ST_ERROR:
            raise LocalProtocolError("the connection is in state ERROR after a local error")
        queued = self._queued
        if queued is not None:
            self._queued = None
            return queued
        if self._owed:
            return PAUSED
        if self._early or self._sync_error:
            raise self._fail(
                RemoteProtocolError(
                    "client did not wait for a reply", reply=R.SYNCHRONIZATION_ERROR
                )
            )
        if state is _ST_CLOSED:
            return _CLOSED
        if state is _ST_GREETING or state is _ST_TLS_HANDOFF:
            if self._eof and state is _ST_GREETING:
                self._s.state = State.CLOSED
                return _CLOSED
            return PAUSED
        try:
            reader = self._reader
            if reader is not None:
                return self._read_content(reader)
            if not self._bytes:  # nothing to parse: the usual case after each reply
                return self._closed()
            return self._read_command()
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None

    def _closed(self) -> Event | Signal:
        if self._eof:
            self._s.state = State.CLOSED
            self._reader = None
            return _CLOSED
        return NEED_DATA

    def _read_content(self, reader: DataReader | ChunkReader) -> Event | Signal:
        got = reader.read(self._buf)
        if got is None:
            return self._closed()
        out, ended = got
        if ended:
            self._reader = None
            end = self._end_of_content(reader)
            if out:
                self._queued = end
                return DataChunk(data=out)
            return end
        if out:
            return DataChunk(data=out)
        return self._closed()

    def _end_of_content(self, reader: DataReader | ChunkReader) -> Event:
        self._owed = True
        if isinstance(reader, DataReader):
            self._pending = Input.END_OF_DATA
            sc = reader.scanner
            return EndOfData(size=sc.size, reject=sc.reject(), long_lines=sc.long_lines)
        bad = self._after_chunk
        if bad is not None:
            self._after_chunk = None
            self._pending = None
            return bad
        self._pending = _OWED_INPUT_FOR_END[reader.last]
        sc2 = reader.scanner
        assert sc2 is not None
        if reader.last:
            return EndOfData(size=sc2.size, reject=sc2.reject(), long_lines=sc2.long_lines)
        return EndOfChunk(size=sc2.size, reject=sc2.reject())

    def _read_command(self) -> Event | Signal:
        buf = self._buf
        i = buf.find_lf()  # read_line, inlined: this runs once per command
        if i < 0:
            if len(self._bytes) > self.limits.line_scan_limit:
                raise RemoteProtocolError("no line end within the scan limit", reply=R.LINE_FLOOD)
            return self._closed()
        if i > self.limits.line_scan_limit:
            raise RemoteProtocolError("line longer than the scan limit", reply=R.LINE_FLOOD)
        line, bare = buf.take_line(i)
        s = self._s
        if s.state is _ST_AUTH:
            return self._auth_response(line, bare)
        if (
            len(line) > 4
            and line[0] | 0x20 == 0x62  # "B" or "b": look closer only then
            and line[:5].upper() == b"BDAT "
            and b"\x00" not in line
        ):
            return self._bdat(line)
        event, command = parse_command(line, bare, s)
        self._owed = True
        self._pending = command
        self._pending_event = event
        return event

    def _auth_response(self, line: bytes, bare: bool) -> Event:
        self._owed = True
        if (bare and self.bare_line_ending is BareLineEnding.REJECT) or not line.isascii():
            self._pending = None
            return BadCommand(reply=R.SYNTAX_ERROR_IN_ARGUMENTS, command="AUTH")
        text = line.decode("ascii")
        if not text.isprintable():
            self._pending = None
            return BadCommand(reply=R.SYNTAX_ERROR_IN_ARGUMENTS, command="AUTH")
        self._pending = Input.AUTH_RESPONSE
        return AuthResponse(data=text)

    def _bdat(self, line: bytes) -> Event | Signal:
        """BDAT (RFC 3030): the payload follows at once, so it is consumed even when the
        command is refused; the BadCommand comes after it."""
        s = self._s
        parsed = bdat_size(line[5:].decode("ascii", "replace"))
        if parsed is None:
            self._owed = True
            self._pending = None
            return BadCommand(reply=R.SYNTAX_ERROR_IN_ARGUMENTS, command="BDAT")
        size, last = parsed
        command = Input.BDAT_LAST if last else Input.BDAT
        bad: Reply | None = None
        if "CHUNKING" not in s.extensions:
            bad = R.COMMAND_NOT_IMPLEMENTED
        elif not is_valid(s.state, command):
            bad = sequence_reply(s.state, command)
        if bad is not None:
            self._after_chunk = BadCommand(reply=bad, command="BDAT")
            self._reader = ChunkReader(size, last, None)
            return self.next_event()
        if self._chunk_scanner is None:
            self._chunk_scanner = ContentScanner(
                self.bare_line_ending, self.long_lines, self.limits.max_message_size
            )
        self._reader = ChunkReader(size, last, self._chunk_scanner)
        return Bdat(size=size, last=last)

    # -- send ------------------------------------------------------------------------------

    def send(self, event: Event | Reply) -> bytes:
        """Send the reply owed; returns its bytes. Raises LocalProtocolError (state → ERROR)
        when no reply is owed or this reply is not a valid answer. In state ERROR any reply
        may be sent (the one to send before closing)."""
        if not isinstance(event, Reply):
            self._local_error(f"a server sends Reply events, not {type(event).__name__}")
        s = self._s
        state = s.state
        code = event.code
        if state is _ST_ERROR:
            return event.to_bytes()
        if state is _ST_GREETING:
            s.state = self._next(state, Input.GREETING, code)
            return event.to_bytes()
        if not self._owed:
            self._local_error(f"no command is waiting for a reply (state {state.name})")
        command = self._pending
        new: State
        if command is None:  # a BadCommand
            if code < 400:
                self._local_error("a refused command must get a 4xx or 5xx reply")
            new = _ST_CLOSED if code == 421 else state
        else:
            try:
                new = next_state(state, command, code)
            except LocalProtocolError:
                s.state = _ST_ERROR
                raise
            if code < 400 or command is _IN_END_OF_DATA or command is _IN_BDAT_LAST:
                self._apply(command, event, new)
            elif command is _IN_BDAT:
                self._end_transaction()
        self._owed = False
        self._pending = None
        s.state = new
        if (
            self._bytes
            and self.forbid_unauth_pipelining
            and new is not _ST_CLOSED
            and new is not _ST_TLS_HANDOFF
            and (command in ENDS_GROUP or "PIPELINING" not in s.extensions)
        ):
            # The client sent more before a reply it had to wait for (RFC 2920 §3.1), e.g.
            # message content before the 354 (test plan A8, T13).
            self._sync_error = True
        return event.to_bytes()

    def _next(self, state: State, command: Input, code: int) -> State:
        try:
            return next_state(state, command, code)
        except LocalProtocolError:
            self._s.state = State.ERROR
            raise

    def _local_error(self, message: str) -> NoReturn:
        self._s.state = State.ERROR
        raise LocalProtocolError(message)

    def _apply(self, command: Input, reply: Reply, new: State) -> None:
        """Side effects of a positive reply (and of any reply that ends a transaction)."""
        s = self._s
        if command is _IN_RCPT:
            s.recipients += 1
        elif command is _IN_MAIL:
            self._end_transaction()
            mail = self._pending_event
            s.utf8 = isinstance(mail, MailFrom) and mail.smtputf8
        elif command is _IN_DATA:
            if new is _ST_DATA:
                self._reader = DataReader(
                    ContentScanner(
                        self.bare_line_ending, self.long_lines, self.limits.max_message_size
                    )
                )
        elif command is _IN_EHLO:
            s.extensions = _advertised(reply.lines)
            self._end_transaction()
        elif command is _IN_HELO:
            s.extensions = {}
            self._end_transaction()
        elif command is _IN_RSET or command is _IN_END_OF_DATA or command is _IN_BDAT_LAST:
            self._end_transaction()

    def _end_transaction(self) -> None:
        s = self._s
        s.utf8 = False
        s.recipients = 0
        self._chunk_scanner = None
