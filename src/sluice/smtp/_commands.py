"""Server role: one received command line → a command event, or a BadCommand with the reply.

Dispatch is a table from verb to (state-machine input, argument parser); the parsers use
:mod:`sluice.smtp._grammar`. What the engine checks here, on its own, is protocol only:
line length (RFC 5321 §4.5.3.1.4), NUL and bare line endings, UTF-8 (RFC 6531), sequence
(the state table), syntax, parameters of advertised extensions only (RFC 5321 §4.1.1.11:
555), SIZE against the limit (RFC 1870: 552 5.3.4), and recipients beyond the limit
(452 4.5.3). Everything else (relaying, who may send) is the caller's policy.

Public names: Session, parse_command, bdat_size.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sluice.message.envelope import Notify
from sluice.smtp import replies as R
from sluice.smtp._events import (
    Auth,
    BadCommand,
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
from sluice.smtp._grammar import (
    PLAIN_PATH,
    GrammarError,
    PathProblem,
    parse_params,
    path_parts,
    plain_path_address,
    split_path_and_params,
    xtext_decode,
)
from sluice.smtp._state import TRANSITIONS, Input, State
from sluice.smtp.limits import (
    MAX_AUTH_LINE,
    MAX_ENVID,
    MAX_ORCPT,
    MAX_PARAMETER_LINE,
    BareLineEnding,
    Limits,
)

__all__ = ["Session", "bdat_size", "parse_command"]

_BDAT_RE = re.compile(r"(\d{1,18})(?: +(LAST))? *\Z", re.IGNORECASE)
_SIZE_RE = re.compile(r"\d{1,18}\Z")
_NOT_IMPLEMENTED = frozenset({"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "VERB"})


class Session:
    """What the command parser needs to know about the conversation so far (kept by the
    Connection, updated from the replies the caller sends)."""

    __slots__ = ("bare_policy", "extensions", "limits", "recipients", "state", "utf8")

    def __init__(self, limits: Limits, bare_policy: BareLineEnding) -> None:
        self.limits = limits
        self.bare_policy = bare_policy
        self.state = State.GREETING
        #: Extension keywords the caller advertised in its EHLO reply (empty after HELO).
        self.extensions: dict[str, str] = {}
        #: The open transaction's MAIL had SMTPUTF8.
        self.utf8 = False
        #: Recipients accepted in the open transaction.
        self.recipients = 0


def _bad(reply: R.Reply, verb: str, detail: str = "") -> BadCommand:
    return BadCommand(reply=reply, command=verb, detail=detail or reply.text)


_SEQUENCE_REPLY: dict[tuple[State, Input], R.Reply] = {
    (State.GREETED, Input.MAIL): R.NEED_EHLO,
    (State.GREETED, Input.RCPT): R.NEED_EHLO,
    (State.GREETED, Input.DATA): R.NEED_EHLO,
    (State.GREETED, Input.BDAT): R.NEED_EHLO,
    (State.GREETED, Input.BDAT_LAST): R.NEED_EHLO,
    (State.GREETED, Input.STARTTLS): R.NEED_EHLO,
    (State.GREETED, Input.AUTH): R.NEED_EHLO,
    (State.READY, Input.RCPT): R.NEED_MAIL,
    (State.READY, Input.DATA): R.NEED_MAIL,
    (State.READY, Input.BDAT): R.NEED_MAIL,
    (State.READY, Input.BDAT_LAST): R.NEED_MAIL,
    (State.MAIL, Input.DATA): R.NEED_RCPT,
    (State.MAIL, Input.BDAT): R.NEED_RCPT,
    (State.MAIL, Input.BDAT_LAST): R.NEED_RCPT,
}


def sequence_reply(state: State, command: Input) -> R.Reply:
    if state is State.REFUSED:
        return R.ONLY_QUIT
    return _SEQUENCE_REPLY.get((state, command), R.BAD_SEQUENCE)


# ------------------------------------------------------------------------------------------
# Argument parsers: (verb, argument, session) → event or BadCommand.

_Parser = Callable[[str, str, Session], Event]


#: The events without fields: frozen and equal to any other instance, so one of each serves
#: every session (no dataclass init per command).
_DATA = Data()
_RSET = Rset()
_QUIT = Quit()
_STARTTLS = StartTls()


def _no_args(event: Event) -> _Parser:
    def parse(verb: str, arg: str, s: Session) -> Event:
        if arg.strip(" "):
            return _bad(R.NO_PARAMETERS_ALLOWED, verb)
        return event

    return parse


def _greeting_arg(verb: str, arg: str) -> str | None:
    domain = arg.strip(" ")
    if not domain or not domain.isprintable():
        return None
    return domain.split(" ", 1)[0]


def _parse_ehlo(verb: str, arg: str, s: Session) -> Event:
    domain = _greeting_arg(verb, arg)
    return _bad(R.SYNTAX_ERROR_IN_ARGUMENTS, verb) if domain is None else Ehlo(domain=domain)


def _parse_helo(verb: str, arg: str, s: Session) -> Event:
    domain = _greeting_arg(verb, arg)
    return _bad(R.SYNTAX_ERROR_IN_ARGUMENTS, verb) if domain is None else Helo(domain=domain)


_PATH_REPLIES = {
    "MAIL": {
        PathProblem.SYNTAX: R.BAD_SENDER_SYNTAX,
        PathProblem.PATH_TOO_LONG: R.SENDER_PATH_TOO_LONG,
        PathProblem.NAME_TOO_LONG: R.SENDER_NAME_TOO_LONG,
        PathProblem.NON_ASCII: R.NON_ASCII_ADDRESS,
    },
    "RCPT": {
        PathProblem.SYNTAX: R.BAD_RECIPIENT_SYNTAX,
        PathProblem.PATH_TOO_LONG: R.RECIPIENT_PATH_TOO_LONG,
        PathProblem.NAME_TOO_LONG: R.RECIPIENT_NAME_TOO_LONG,
        PathProblem.NON_ASCII: R.NON_ASCII_ADDRESS,
    },
}


def _split(verb: str, arg: str, keyword: str) -> tuple[str, str] | BadCommand:
    """``FROM:<path> params`` → (path token, params) or the BadCommand."""
    if arg[: len(keyword)].upper() != keyword:
        return _bad(R.SYNTAX_ERROR_IN_ARGUMENTS, verb, f"expected {keyword}")
    try:
        return split_path_and_params(arg[len(keyword) :])
    except GrammarError as exc:
        return _bad(_PATH_REPLIES[verb][exc.problem], verb, str(exc))


#: ``FROM:<local@domain>`` / ``TO:<local@domain>`` with nothing else: one match instead of
#: the split, the path token and the mailbox grammar. Whatever this accepts, the full
#: parsers accept with the same result (tests/smtp/test_smtp_grammar.py compares them).
_PLAIN_MAIL_RE = re.compile("(?i:FROM:)" + PLAIN_PATH, re.ASCII)
_PLAIN_RCPT_RE = re.compile("(?i:TO:)" + PLAIN_PATH, re.ASCII)


def _parse_mail(verb: str, arg: str, s: Session) -> Event:
    m = _PLAIN_MAIL_RE.fullmatch(arg)
    if m is not None:
        address = plain_path_address(m)
        if address is not None:
            return MailFrom(address=address)
    return _parse_mail_full(verb, arg, s)


def _parse_mail_full(verb: str, arg: str, s: Session) -> Event:
    split = _split(verb, arg, "FROM:")
    if isinstance(split, BadCommand):
        return split
    token, param_text = split
    if not param_text:  # the usual MAIL FROM:<path>
        try:
            address, route = path_parts(token, utf8=False)
        except GrammarError as exc:
            return _bad(_PATH_REPLIES[verb][exc.problem], verb, str(exc))
        return MailFrom(address=address, route=route)
    ext = s.extensions
    size: int | None = None
    body: str | None = None
    utf8 = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None
    try:
        params = parse_params(param_text)
    except GrammarError:
        return _bad(R.SYNTAX_ERROR_IN_ARGUMENTS, verb)
    seen: set[str] = set()
    for key, value in params:
        if key in seen:
            return _bad(R.BAD_PARAMETER, verb, f"{key} given twice")
        seen.add(key)
        if key == "SIZE" and "SIZE" in ext:
            if value is None or _SIZE_RE.match(value) is None:
                return _bad(R.BAD_PARAMETER, verb, "bad SIZE")
            size = int(value)
        elif key == "BODY" and "8BITMIME" in ext:
            body = (value or "").upper()
            if body not in ("7BIT", "8BITMIME") and not (
                body == "BINARYMIME" and "BINARYMIME" in ext
            ):
                return _bad(R.BAD_PARAMETER, verb, "bad BODY")
        elif key == "SMTPUTF8" and "SMTPUTF8" in ext:
            if value is not None:
                return _bad(R.BAD_PARAMETER, verb, "SMTPUTF8 takes no value")
            utf8 = True
        elif key == "RET" and "DSN" in ext:
            ret = (value or "").upper()
            if ret not in ("FULL", "HDRS"):
                return _bad(R.BAD_PARAMETER, verb, "bad RET")
        elif key == "ENVID" and "DSN" in ext:
            if value is None or len(value) > MAX_ENVID:
                return _bad(R.BAD_PARAMETER, verb, "bad ENVID")
            try:
                envid = xtext_decode(value)
            except GrammarError:
                return _bad(R.BAD_PARAMETER, verb, "bad ENVID xtext")
        elif key == "AUTH" and "AUTH" in ext:
            if value is None:
                return _bad(R.BAD_PARAMETER, verb, "bad AUTH")
            try:
                auth = xtext_decode(value)
            except GrammarError:
                return _bad(R.BAD_PARAMETER, verb, "bad AUTH xtext")
        else:
            return _bad(R.UNSUPPORTED_PARAMETER, verb, f"unsupported parameter {key}")
    try:
        address, route = path_parts(token, utf8=utf8)
    except GrammarError as exc:
        return _bad(_PATH_REPLIES[verb][exc.problem], verb, str(exc))
    limit = s.limits.max_message_size
    if size is not None and limit is not None and size > limit:
        return _bad(R.MESSAGE_TOO_BIG, verb, f"SIZE={size} over {limit}")
    return MailFrom(
        address=address,
        route=route,
        size=size,
        body=body,
        smtputf8=utf8,
        ret=ret,
        envid=envid,
        auth=auth,
    )


_NOTIFY = {"SUCCESS": Notify.SUCCESS, "FAILURE": Notify.FAILURE, "DELAY": Notify.DELAY}


def _parse_notify(value: str | None) -> Notify | None:
    if value is None:
        return None
    items = value.upper().split(",")
    if items == ["NEVER"]:
        return Notify.NEVER
    flags = Notify.NONE
    for item in items:
        flag = _NOTIFY.get(item)
        if flag is None or flag in flags:
            return None
        flags |= flag
    return flags


def _parse_orcpt(value: str | None) -> str | None:
    if value is None or len(value) > MAX_ORCPT:
        return None
    addr_type, sep, xtext = value.partition(";")
    if not sep or not addr_type or not xtext or not addr_type.isascii():
        return None
    try:
        return f"{addr_type};{xtext_decode(xtext)}"
    except GrammarError:
        return None


def _parse_rcpt(verb: str, arg: str, s: Session) -> Event:
    m = _PLAIN_RCPT_RE.fullmatch(arg)
    if m is not None:
        address = plain_path_address(m)
        limit = s.limits.max_recipients
        if address is not None and (limit is None or s.recipients < limit):
            return RcptTo(address=address)
    return _parse_rcpt_full(verb, arg, s)


def _parse_rcpt_full(verb: str, arg: str, s: Session) -> Event:
    split = _split(verb, arg, "TO:")
    if isinstance(split, BadCommand):
        return split
    token, param_text = split
    notify = Notify.NONE
    orcpt: str | None = None
    try:
        params = parse_params(param_text) if param_text else ()
    except GrammarError:
        return _bad(R.SYNTAX_ERROR_IN_ARGUMENTS, verb)
    seen: set[str] = set()
    for key, value in params:
        if key in seen:
            return _bad(R.BAD_PARAMETER, verb, f"{key} given twice")
        seen.add(key)
        if key == "NOTIFY" and "DSN" in s.extensions:
            parsed = _parse_notify(value)
            if parsed is None:
                return _bad(R.BAD_PARAMETER, verb, "bad NOTIFY")
            notify = parsed
        elif key == "ORCPT" and "DSN" in s.extensions:
            orcpt = _parse_orcpt(value)
            if orcpt is None:
                return _bad(R.BAD_PARAMETER, verb, "bad ORCPT")
        else:
            return _bad(R.UNSUPPORTED_PARAMETER, verb, f"unsupported parameter {key}")
    try:
        address, route = path_parts(token, utf8=s.utf8, postmaster=True)
    except GrammarError as exc:
        return _bad(_PATH_REPLIES[verb][exc.problem], verb, str(exc))
    if not address:
        return _bad(R.BAD_RECIPIENT_SYNTAX, verb, "empty forward-path")
    limit = s.limits.max_recipients
    if limit is not None and s.recipients >= limit:
        return _bad(R.TOO_MANY_RECIPIENTS, verb)
    return RcptTo(address=address, route=route, notify=notify, orcpt=orcpt)


def _parse_vrfy(verb: str, arg: str, s: Session) -> Event:
    arg = arg.strip(" ")
    return Vrfy(argument=arg) if arg else _bad(R.SYNTAX_ERROR_IN_ARGUMENTS, verb)


def _parse_auth(verb: str, arg: str, s: Session) -> Event:
    if "AUTH" not in s.extensions:
        return _bad(R.COMMAND_NOT_IMPLEMENTED, verb)
    parts = arg.strip(" ").split(" ")
    if not parts[0] or len(parts) > 2:
        return _bad(R.SYNTAX_ERROR_IN_ARGUMENTS, verb)
    return Auth(mechanism=parts[0].upper(), initial_response=parts[1] if len(parts) > 1 else None)


def _parse_starttls(verb: str, arg: str, s: Session) -> Event:
    if "STARTTLS" not in s.extensions:
        return _bad(R.COMMAND_NOT_IMPLEMENTED, verb)
    return _bad(R.NO_PARAMETERS_ALLOWED, verb) if arg.strip(" ") else _STARTTLS


def _parse_data(verb: str, arg: str, s: Session) -> Event:
    if arg.strip(" "):
        return _bad(R.NO_PARAMETERS_ALLOWED, verb)
    return _DATA


#: verb → (state-machine input, parser). BDAT is framed separately (its payload follows).
COMMANDS: dict[str, tuple[Input, _Parser]] = {
    "EHLO": (Input.EHLO, _parse_ehlo),
    "HELO": (Input.HELO, _parse_helo),
    "MAIL": (Input.MAIL, _parse_mail),
    "RCPT": (Input.RCPT, _parse_rcpt),
    "DATA": (Input.DATA, _parse_data),
    "RSET": (Input.RSET, _no_args(_RSET)),
    "NOOP": (Input.NOOP, lambda verb, arg, s: Noop(argument=arg.strip(" "))),
    "QUIT": (Input.QUIT, _no_args(_QUIT)),
    "VRFY": (Input.VRFY, _parse_vrfy),
    "HELP": (Input.HELP, lambda verb, arg, s: Help(argument=arg.strip(" "))),
    "STARTTLS": (Input.STARTTLS, _parse_starttls),
    "AUTH": (Input.AUTH, _parse_auth),
}

_LINE_LIMITS = {"MAIL": MAX_PARAMETER_LINE, "RCPT": MAX_PARAMETER_LINE, "AUTH": MAX_AUTH_LINE}
_UTF8_VERBS = frozenset({"MAIL", "RCPT"})


def bdat_size(arg: str) -> tuple[int, bool] | None:
    """``"123 LAST"`` → (123, True); None when it does not parse."""
    m = _BDAT_RE.match(arg.strip(" "))
    if m is None:
        return None
    return int(m[1]), m[2] is not None


def parse_command(line: bytes, bare_lf: bool, s: Session) -> tuple[Event, Input | None]:
    """Parse one command line (without its line ending) in the current session.

    Returns the event and the input it drives (None for a BadCommand). BDAT lines are not
    handled here (see ``bdat_size``); the Connection frames them.
    """
    if bare_lf and s.bare_policy is BareLineEnding.REJECT:
        return _bad(R.BARE_LINE_ENDING_IN_COMMAND, ""), None
    if b"\x00" in line:
        return _bad(R.NUL_IN_COMMAND, ""), None
    if b"\r" in line:
        return _bad(R.BARE_LINE_ENDING_IN_COMMAND, ""), None
    ascii = line.isascii()
    if ascii:
        text = line.decode("ascii")
    else:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return _bad(R.INVALID_UTF8, ""), None
    verb, _, arg = text.partition(" ")
    verb = verb.upper()
    size = len(line) + 2
    if size > s.limits.max_command_line and size > _LINE_LIMITS.get(verb, 0):
        return _bad(R.LINE_TOO_LONG, verb), None
    entry = COMMANDS.get(verb)
    if entry is None:
        if verb in _NOT_IMPLEMENTED:
            return _bad(R.COMMAND_NOT_IMPLEMENTED, verb), None
        return _bad(R.COMMAND_UNRECOGNIZED, verb[:16]), None
    command, parser = entry
    state = s.state
    if command not in TRANSITIONS[state]:
        return _bad(sequence_reply(state, command), verb), None
    if not ascii and verb not in _UTF8_VERBS:
        return _bad(R.SYNTAX_ERROR_IN_ARGUMENTS, verb, "non-ASCII argument"), None
    event = parser(verb, arg, s)
    return event, (None if isinstance(event, BadCommand) else command)
