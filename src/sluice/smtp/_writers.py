"""Writers: events → wire bytes. Command lines for the client role (checked with the same
grammar the server parses with); replies serialise themselves (``Reply.to_bytes``).

Each writer returns the bytes or raises LocalProtocolError (the event cannot be put on the
wire as a valid SMTP line). Every path is checked with the grammar before it is written;
a reverse-path that passed once is remembered (senders repeat from message to message), so
the check is not redone for it.

A command that cannot be written raises :class:`CommandNotWritable` (a LocalProtocolError):
the event's data is at fault, not the order of calls, so the engine can take back a group
it was building (``ClientConnection.send_group``).

Public names: write_command, CommandNotWritable.
"""

from __future__ import annotations

from sluice.message.envelope import Notify
from sluice.smtp._errors import LocalProtocolError
from sluice.smtp._events import (
    Auth,
    AuthResponse,
    Bdat,
    Data,
    Ehlo,
    Event,
    Helo,
    Help,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
)
from sluice.smtp._grammar import GrammarError, path_parts, xtext_encode
from sluice.smtp.limits import MAX_AUTH_LINE, MAX_COMMAND_LINE, MAX_PARAMETER_LINE

__all__ = ["CommandNotWritable", "write_command"]


class CommandNotWritable(LocalProtocolError):
    """The event cannot be put on the wire as a valid SMTP line (a path or parameter the
    grammar refuses, or a line over its limit)."""


#: Route-less reverse-paths that passed the grammar: (address, utf8) → the ``<...>`` token.
#: Only paths that were valid go in, so a hit skips nothing the check would refuse.
_SENDER_PATHS: dict[tuple[str, bool], str] = {}
#: Bound of that memo; when full it starts over (many distinct senders, e.g. VERP).
_SENDER_PATHS_LIMIT = 1024


def _path(address: str, route: tuple[str, ...], *, utf8: bool, postmaster: bool) -> str:
    prefix = ",".join(f"@{d}" for d in route) + ":" if route else ""
    token = f"<{prefix}{address}>"
    try:
        path_parts(token, utf8=utf8, postmaster=postmaster)
    except GrammarError as exc:
        raise CommandNotWritable(f"cannot send path {token!r}: {exc}") from exc
    return token


def _reverse_path(address: str, route: tuple[str, ...], utf8: bool) -> str:
    """:func:`_path` for MAIL FROM, remembering the route-less ones that passed."""
    if route:
        return _path(address, route, utf8=utf8, postmaster=False)
    key = (address, utf8)
    token = _SENDER_PATHS.get(key)
    if token is None:
        token = _path(address, route, utf8=utf8, postmaster=False)
        if len(_SENDER_PATHS) >= _SENDER_PATHS_LIMIT:
            _SENDER_PATHS.clear()
        _SENDER_PATHS[key] = token
    return token


def _mail(ev: Event) -> str:
    assert isinstance(ev, MailFrom)
    path = _reverse_path(ev.address, ev.route, ev.smtputf8)
    if (
        ev.size is None
        and ev.body is None
        and not ev.smtputf8
        and ev.ret is None
        and ev.envid is None
        and ev.auth is None
    ):
        return f"MAIL FROM:{path}"  # no parameters: the usual case without a SIZE offer
    parts = [f"MAIL FROM:{path}"]
    if ev.size is not None:
        parts.append(f"SIZE={ev.size}")
    if ev.body is not None:
        parts.append(f"BODY={ev.body}")
    if ev.smtputf8:
        parts.append("SMTPUTF8")
    if ev.ret is not None:
        parts.append(f"RET={ev.ret}")
    if ev.envid is not None:
        parts.append(f"ENVID={xtext_encode(ev.envid)}")
    if ev.auth is not None:
        parts.append(f"AUTH={xtext_encode(ev.auth)}")
    return " ".join(parts)


def _notify(flags: Notify) -> str:
    if Notify.NEVER in flags:
        return "NEVER"
    names = [
        name
        for name, f in (
            ("SUCCESS", Notify.SUCCESS),
            ("FAILURE", Notify.FAILURE),
            ("DELAY", Notify.DELAY),
        )
        if f in flags
    ]
    return ",".join(names)


def _rcpt(ev: Event, utf8: bool) -> str:
    assert isinstance(ev, RcptTo)
    path = _path(ev.address, ev.route, utf8=utf8, postmaster=True)
    if not ev.notify._value_ and ev.orcpt is None:  # _value_: Flag.__bool__ is Python code
        return f"RCPT TO:{path}"
    parts = [f"RCPT TO:{path}"]
    if ev.notify._value_:
        parts.append(f"NOTIFY={_notify(ev.notify)}")
    if ev.orcpt is not None:
        addr_type, _, addr = ev.orcpt.partition(";")
        parts.append(f"ORCPT={addr_type};{xtext_encode(addr)}")
    return " ".join(parts)


def _simple(ev: Event) -> str:
    match ev:
        case Ehlo(domain=d):
            return f"EHLO {d}"
        case Helo(domain=d):
            return f"HELO {d}"
        case Data():
            return "DATA"
        case Bdat(size=n, last=last):
            return f"BDAT {n} LAST" if last else f"BDAT {n}"
        case Rset():
            return "RSET"
        case Noop(argument=a):
            return f"NOOP {a}" if a else "NOOP"
        case Quit():
            return "QUIT"
        case Vrfy(argument=a):
            return f"VRFY {a}"
        case Help(argument=a):
            return f"HELP {a}" if a else "HELP"
        case StartTls():
            return "STARTTLS"
        case Auth(mechanism=m, initial_response=r):
            return f"AUTH {m} {r}" if r is not None else f"AUTH {m}"
        case AuthResponse(data=d):
            return d
    raise LocalProtocolError(f"{type(ev).__name__} is not a command")


_LIMIT: dict[type[Event], int] = {
    MailFrom: MAX_PARAMETER_LINE,
    RcptTo: MAX_PARAMETER_LINE,
    Auth: MAX_AUTH_LINE,
    AuthResponse: MAX_AUTH_LINE,
}


_DATA_LINE = b"DATA\r\n"


def write_command(ev: Event, *, utf8: bool = False) -> bytes:
    """A command event → its line with CRLF. ``utf8``: the transaction uses SMTPUTF8 (RCPT
    paths may then be non-ASCII). Raises LocalProtocolError."""
    cls = type(ev)
    if cls is RcptTo:
        text = _rcpt(ev, utf8)
    elif cls is MailFrom:
        text = _mail(ev)
    elif cls is Data:
        return _DATA_LINE
    else:
        text = _simple(ev)
    line = (text + "\r\n").encode("utf-8")
    if len(line) > _LIMIT.get(cls, MAX_COMMAND_LINE):
        raise CommandNotWritable(f"{cls.__name__} line longer than the RFC 5321 limit")
    return line
