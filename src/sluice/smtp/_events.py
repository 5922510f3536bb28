"""SMTP events: frozen, keyword-only, slotted values named for what is on the wire.

Commands (the server receives them, the client sends them): Ehlo, Helo, MailFrom, RcptTo,
Data, Bdat, Rset, Noop, Quit, Vrfy, Help, StartTls, Auth, AuthResponse.
Message content: DataChunk, EndOfData, EndOfChunk.
Replies: :class:`~sluice.smtp.replies.Reply` (sent by the server), ReplyReceived (what the
client's ``next_event`` returns: the reply and the command it answers).
Other: BadCommand (a recoverable peer mistake the server engine caught; answer ``reply``),
ConnectionClosed (the peer closed).
Signals from ``next_event``: NEED_DATA, PAUSED.

Constructors check that a value can go on the wire (no CR, LF or NUL where a line would
break) and raise LocalProtocolError otherwise.

Public names: the classes above, Event, Command, Signal, NEED_DATA, PAUSED, INPUT_OF.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from sluice.message.envelope import Notify
from sluice.smtp._errors import LocalProtocolError
from sluice.smtp._state import Input
from sluice.smtp.replies import Reply

__all__ = [
    "INPUT_OF",
    "NEED_DATA",
    "PAUSED",
    "Auth",
    "AuthResponse",
    "BadCommand",
    "Bdat",
    "Command",
    "ConnectionClosed",
    "Data",
    "DataChunk",
    "Ehlo",
    "EndOfChunk",
    "EndOfData",
    "Event",
    "Helo",
    "Help",
    "MailFrom",
    "Noop",
    "Quit",
    "RcptTo",
    "ReplyReceived",
    "Rset",
    "Signal",
    "StartTls",
    "Vrfy",
]

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN_BAD_RE = re.compile(r"[\x00-\x20\x7f]")


def _check_line(value: str, what: str) -> None:
    if value.isascii() and value.isprintable():  # no control characters: the usual case
        return
    if _CONTROL_RE.search(value) is not None:
        raise LocalProtocolError(f"{what} may not contain control characters: {value!r}")


def _check_token(value: str, what: str) -> None:
    if value.isascii() and value.isprintable() and value and " " not in value:
        return  # printable ASCII without a space: the usual case
    if not value or _TOKEN_BAD_RE.search(value) is not None:
        raise LocalProtocolError(f"{what} must be a non-empty token without spaces: {value!r}")


class Signal(enum.Enum):
    """What ``next_event`` returns when it has no event."""

    #: Feed more bytes with ``receive_data``.
    NEED_DATA = "NEED_DATA"
    #: The engine waits for you: send the reply owed (server), or the next command, or (after
    #: STARTTLS) switch to TLS and build a fresh Connection.
    PAUSED = "PAUSED"


NEED_DATA = Signal.NEED_DATA
PAUSED = Signal.PAUSED


class Event:
    """Base of every event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Ehlo(Event):
    """``EHLO domain`` (RFC 5321 §4.1.1.1); ``domain`` is the argument as given."""

    domain: str

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(self, *, domain: str) -> None:
        object.__setattr__(self, "domain", domain)
        self.__post_init__()

    def __post_init__(self) -> None:
        _check_token(self.domain, "EHLO domain")


@dataclass(frozen=True, slots=True, kw_only=True)
class Helo(Event):
    """``HELO domain`` (RFC 5321 §4.1.1.1)."""

    domain: str

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(self, *, domain: str) -> None:
        object.__setattr__(self, "domain", domain)
        self.__post_init__()

    def __post_init__(self) -> None:
        _check_token(self.domain, "HELO domain")


@dataclass(frozen=True, slots=True, kw_only=True)
class MailFrom(Event):
    """``MAIL FROM:<reverse-path> [params]`` (RFC 5321 §4.1.1.2) with the parameters of
    SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531), RET/ENVID (RFC 3461) and AUTH
    (RFC 4954 §5), already checked and decoded (ENVID from xtext).

    ``address`` is the mailbox without angle brackets (local part as sent, quotes kept), or
    ``""`` for the null reverse-path. ``route`` is an RFC 5321 source route, which the RFC
    says to accept and ignore (§4.1.1.3, Appendix C); policy may refuse it.
    """

    address: str
    route: tuple[str, ...] = ()
    size: int | None = None
    #: BODY=7BIT, 8BITMIME or BINARYMIME, upper-cased; None when absent.
    body: str | None = None
    smtputf8: bool = False
    #: RET=FULL or HDRS; None when absent.
    ret: str | None = None
    envid: str | None = None
    #: AUTH=<mailbox> decoded, or "<>" (RFC 4954 §5); None when absent.
    auth: str | None = None

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self,
        *,
        address: str,
        route: tuple[str, ...] = (),
        size: int | None = None,
        body: str | None = None,
        smtputf8: bool = False,
        ret: str | None = None,
        envid: str | None = None,
        auth: str | None = None,
    ) -> None:
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "route", route)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "smtputf8", smtputf8)
        object.__setattr__(self, "ret", ret)
        object.__setattr__(self, "envid", envid)
        object.__setattr__(self, "auth", auth)
        self.__post_init__()

    def __post_init__(self) -> None:
        _check_line(self.address, "MAIL FROM address")
        if self.envid is not None:
            _check_line(self.envid, "ENVID")

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True, slots=True, kw_only=True)
class RcptTo(Event):
    """``RCPT TO:<forward-path> [params]`` (RFC 5321 §4.1.1.3) with RFC 3461 NOTIFY and ORCPT
    (``orcpt`` is ``addr-type;address`` with the xtext decoded)."""

    address: str
    route: tuple[str, ...] = ()
    notify: Notify = Notify.NONE
    orcpt: str | None = None

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self,
        *,
        address: str,
        route: tuple[str, ...] = (),
        notify: Notify = Notify.NONE,
        orcpt: str | None = None,
    ) -> None:
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "route", route)
        object.__setattr__(self, "notify", notify)
        object.__setattr__(self, "orcpt", orcpt)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not self.address:
            raise LocalProtocolError("RCPT TO address may not be empty")
        _check_line(self.address, "RCPT TO address")
        if self.orcpt is not None:
            _check_line(self.orcpt, "ORCPT")

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True, slots=True, kw_only=True)
class Data(Event):
    """``DATA`` (RFC 5321 §4.1.1.4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bdat(Event):
    """``BDAT size [LAST]`` (RFC 3030 §2); the ``size`` octets follow as DataChunk events,
    then EndOfChunk (or EndOfData when ``last``), which is what the reply answers."""

    size: int
    last: bool = False

    def __post_init__(self) -> None:
        if self.size < 0:
            raise LocalProtocolError("BDAT size must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class Rset(Event):
    """``RSET`` (RFC 5321 §4.1.1.5)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Noop(Event):
    """``NOOP [string]`` (RFC 5321 §4.1.1.9)."""

    argument: str = ""

    def __post_init__(self) -> None:
        _check_line(self.argument, "NOOP argument")


@dataclass(frozen=True, slots=True, kw_only=True)
class Quit(Event):
    """``QUIT`` (RFC 5321 §4.1.1.10)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Vrfy(Event):
    """``VRFY string`` (RFC 5321 §4.1.1.6); Sluice answers 252."""

    argument: str

    def __post_init__(self) -> None:
        _check_line(self.argument, "VRFY argument")


@dataclass(frozen=True, slots=True, kw_only=True)
class Help(Event):
    """``HELP [string]`` (RFC 5321 §4.1.1.8)."""

    argument: str = ""

    def __post_init__(self) -> None:
        _check_line(self.argument, "HELP argument")


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTls(Event):
    """``STARTTLS`` (RFC 3207 §4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth(Event):
    """``AUTH mechanism [initial-response]`` (RFC 4954 §4). Placeholder: the engine frames it;
    SASL itself belongs to the caller."""

    mechanism: str
    initial_response: str | None = None

    def __post_init__(self) -> None:
        _check_token(self.mechanism, "AUTH mechanism")
        if self.initial_response is not None:
            _check_line(self.initial_response, "AUTH initial response")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResponse(Event):
    """A SASL response line sent after a 334 (RFC 4954 §4); ``"*"`` cancels."""

    data: str

    def __post_init__(self) -> None:
        _check_line(self.data, "AUTH response")


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChunk(Event):
    """A piece of message content. Received: dot-unstuffed, CRLF line endings (bare ones
    normalised under that policy); hand it on as is. Sent (client): any line endings; the
    engine converts them to CRLF and dot-stuffs."""

    data: bytes

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(self, *, data: bytes) -> None:
        object.__setattr__(self, "data", data)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfData(Event):
    """The end of the message (``<CRLF>.<CRLF>``, or the last BDAT chunk). The server owes
    the reply to it.

    ``reject`` is not None when the engine found the content unacceptable (too big: 552
    5.3.4; NUL: 554 5.6.0; an over-long line under the reject policy: 554 5.6.0): the caller
    must discard what it received and send ``reject`` (or another failure reply).
    ``long_lines`` is true when a line exceeded 998 octets under the accept policy: wrap it
    before relaying.
    """

    size: int = 0
    reject: Reply | None = None
    long_lines: bool = False

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self, *, size: int = 0, reject: Reply | None = None, long_lines: bool = False
    ) -> None:
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "reject", reject)
        object.__setattr__(self, "long_lines", long_lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfChunk(Event):
    """The end of a non-last BDAT chunk; the server owes the reply. ``reject`` as in
    EndOfData (checked on the content so far)."""

    size: int = 0
    reject: Reply | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BadCommand(Event):
    """A command the server engine refused on its own: bad syntax, out of sequence, too
    long, an unsupported parameter, a recipient beyond the limit, a SIZE over the limit.
    Recoverable: send ``reply`` (or another failure reply) and the session goes on.

    ``command`` is the verb as received (upper-cased, "" if none could be read).
    """

    reply: Reply
    command: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyReceived(Event):
    """Client role: a complete reply and the command it answers (``None`` for the greeting
    and for a 421 the server sent on its own)."""

    reply: Reply
    command: Event | None

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(self, *, reply: Reply, command: Event | None) -> None:
        object.__setattr__(self, "reply", reply)
        object.__setattr__(self, "command", command)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed(Event):
    """The peer closed the connection (``receive_data(b"")``)."""


#: The commands, as a union for type hints.
Command = (
    Ehlo
    | Helo
    | MailFrom
    | RcptTo
    | Data
    | Bdat
    | Rset
    | Noop
    | Quit
    | Vrfy
    | Help
    | StartTls
    | Auth
    | AuthResponse
)

#: The state-machine input each command (or content end) drives.
INPUT_OF: dict[type[Event], Input] = {
    Ehlo: Input.EHLO,
    Helo: Input.HELO,
    MailFrom: Input.MAIL,
    RcptTo: Input.RCPT,
    Data: Input.DATA,
    Rset: Input.RSET,
    Noop: Input.NOOP,
    Quit: Input.QUIT,
    Vrfy: Input.VRFY,
    Help: Input.HELP,
    StartTls: Input.STARTTLS,
    Auth: Input.AUTH,
    AuthResponse: Input.AUTH_RESPONSE,
    EndOfData: Input.END_OF_DATA,
}
