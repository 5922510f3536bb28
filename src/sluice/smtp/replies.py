"""SMTP replies: the Reply value, RFC 3463 enhanced status codes, the reply catalogue, parsing.

A :class:`Reply` is a code, an optional :class:`EnhancedStatus` and one or more text lines;
it serialises itself once (``to_bytes``) and is shared by both roles: the server sends them,
the client receives them (``parse_reply`` builds one from received lines).

The catalogue holds the replies the engine suggests itself (``BadCommand.reply``, error
hints) and the common ones a caller sends; texts follow RFC 5321 §4.2 and §4.5.3.1.10 and
codes RFC 3463. Factories build the replies that carry a name: :func:`greeting`,
:func:`ehlo_reply`, :func:`helo_reply`, :func:`closing`, :func:`message_accepted`.

Public names: EnhancedStatus, Reply, parse_reply, parse_enhanced, is_transient, is_permanent,
greeting, ehlo_reply, helo_reply, closing, message_accepted, and the catalogue constants.
Raises: LocalProtocolError (a Reply that cannot go on the wire), RemoteProtocolError
(``parse_reply`` on malformed reply lines).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sluice.smtp._errors import LocalProtocolError, RemoteProtocolError
from sluice.smtp.limits import MAX_REPLY_LINE

__all__ = [
    "BAD_PARAMETER",
    "BAD_RECIPIENT_SYNTAX",
    "BAD_SENDER_SYNTAX",
    "BAD_SEQUENCE",
    "BARE_LINE_ENDING_IN_COMMAND",
    "BARE_LINE_ENDING_IN_CONTENT",
    "BARE_LINE_ENDING_IN_DATA",
    "CANNOT_VRFY",
    "COMMAND_NOT_IMPLEMENTED",
    "COMMAND_UNRECOGNIZED",
    "HELP",
    "INSUFFICIENT_STORAGE",
    "INVALID_UTF8",
    "LINE_FLOOD",
    "LINE_TOO_LONG",
    "LOCAL_ERROR",
    "LONG_LINE_IN_DATA",
    "MESSAGE_TOO_BIG",
    "NEED_EHLO",
    "NEED_MAIL",
    "NEED_RCPT",
    "NON_ASCII_ADDRESS",
    "NO_PARAMETERS_ALLOWED",
    "NUL_IN_COMMAND",
    "NUL_IN_DATA",
    "OK",
    "ONLY_QUIT",
    "READY_TO_START_TLS",
    "RECIPIENT_NAME_TOO_LONG",
    "RECIPIENT_OK",
    "RECIPIENT_PATH_TOO_LONG",
    "SENDER_NAME_TOO_LONG",
    "SENDER_OK",
    "SENDER_PATH_TOO_LONG",
    "SHUTTING_DOWN",
    "START_MAIL_INPUT",
    "SYNCHRONIZATION_ERROR",
    "SYNTAX_ERROR_IN_ARGUMENTS",
    "TIMEOUT",
    "TOO_MANY_CONNECTIONS",
    "TOO_MANY_RECIPIENTS",
    "UNSUPPORTED_PARAMETER",
    "EnhancedStatus",
    "Reply",
    "closing",
    "ehlo_reply",
    "greeting",
    "helo_reply",
    "is_permanent",
    "is_transient",
    "message_accepted",
    "parse_enhanced",
    "parse_reply",
    "parse_reply_line",
]

_ENHANCED_RE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})\Z")
_ENHANCED_PREFIX_RE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|\Z)")
_BAD_TEXT_RE = re.compile(r"[\r\n\x00]")
_REPLY_LINE_RE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?\Z", re.DOTALL)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnhancedStatus:
    """An RFC 3463 enhanced status code ``class.subject.detail`` (e.g. 5.1.3)."""

    #: 2 success, 4 persistent transient failure, 5 permanent failure (RFC 3463 §3.1).
    klass: int
    #: The subject (RFC 3463 §3.2): 0 other, 1 addressing, 2 mailbox, 3 mail system,
    #: 4 network and routing, 5 mail delivery protocol, 6 content, 7 security.
    subject: int
    detail: int
    #: ``str(self)``, made once (every outcome and log line asks for it).
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = f"{self.klass}.{self.subject}.{self.detail}"
        if self.klass not in (2, 4, 5) or not (
            0 <= self.subject <= 999 and 0 <= self.detail <= 999
        ):
            raise LocalProtocolError(f"invalid enhanced status {text}")
        object.__setattr__(self, "_text", text)

    def __str__(self) -> str:
        return self._text


def parse_enhanced(text: str) -> EnhancedStatus | None:
    """``"5.1.3"`` → EnhancedStatus; anything else → None."""
    m = _ENHANCED_RE.match(text)
    if m is None:
        return None
    return EnhancedStatus(klass=int(m[1]), subject=int(m[2]), detail=int(m[3]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One SMTP reply (RFC 5321 §4.2), possibly multi-line, with an optional RFC 3463 code.

    ``lines`` are the text lines without code, hyphen or enhanced code; the enhanced code, when
    present, prefixes every line on the wire (RFC 2034 §4). Construction validates that the
    reply can go on the wire: code 200–599, no CR, LF or NUL in the text, each line within
    RFC 5321 §4.5.3.1.5's 512 octets. Replies parsed from a peer skip the length check.
    """

    code: int
    lines: tuple[str, ...] = ("",)
    enhanced: EnhancedStatus | None = None
    _wire: bytes = field(init=False, repr=False, compare=False)

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self, *, code: int, lines: tuple[str, ...] = ("",), enhanced: EnhancedStatus | None = None
    ) -> None:
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "lines", lines)
        object.__setattr__(self, "enhanced", enhanced)
        self.__post_init__()

    def __post_init__(self) -> None:
        # Not yet made (a reply's wire form is never empty). A value, not a missing
        # attribute: raising AttributeError per new reply costs a traceback when compiled.
        object.__setattr__(self, "_wire", b"")
        if not (200 <= self.code <= 599) or not self.lines:
            raise LocalProtocolError(f"invalid reply code {self.code} or empty reply")
        for line in self.lines:
            if not line.isprintable() and _BAD_TEXT_RE.search(line) is not None:
                raise LocalProtocolError(f"reply text may not contain CR, LF or NUL: {line!r}")
        if self.enhanced is not None and self.enhanced.klass != self.code // 100:
            raise LocalProtocolError(f"enhanced status {self.enhanced} does not match {self.code}")

    @classmethod
    def of(cls, code: int, enhanced: str | None, *lines: str) -> Reply:
        """Shorthand: ``Reply.of(250, "2.1.0", "Sender OK")``."""
        status = None
        if enhanced is not None:
            status = parse_enhanced(enhanced)
            if status is None:
                raise LocalProtocolError(f"invalid enhanced status {enhanced!r}")
        return cls(code=code, lines=lines or ("",), enhanced=status)

    @property
    def text(self) -> str:
        """All text lines joined by newlines (without codes)."""
        return "\n".join(self.lines)

    @property
    def is_positive(self) -> bool:
        return self.code < 300

    @property
    def is_intermediate(self) -> bool:
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def to_bytes(self) -> bytes:
        """The reply as it goes on the wire (CRLF line endings); computed once."""
        made = self._wire
        if made:
            return made
        if len(self.lines) == 1:  # the usual reply: one line, no loop
            head = f"{self.code} {self.enhanced} " if self.enhanced is not None else f"{self.code} "
            wire = f"{head}{self.lines[0]}".rstrip(" ").encode("utf-8") + b"\r\n"
            if len(wire) > MAX_REPLY_LINE:
                raise LocalProtocolError(f"reply line longer than {MAX_REPLY_LINE} octets")
            object.__setattr__(self, "_wire", wire)
            return wire
        prefix = f"{self.enhanced} " if self.enhanced is not None else ""
        last = len(self.lines) - 1
        parts = []
        for i, line in enumerate(self.lines):
            text = f"{prefix}{line}" if (prefix or line) else ""
            sep = " " if i == last else "-"
            encoded = f"{self.code}{sep}{text}".rstrip(" ").encode("utf-8") + b"\r\n"
            if len(encoded) > MAX_REPLY_LINE:
                raise LocalProtocolError(f"reply line longer than {MAX_REPLY_LINE} octets")
            parts.append(encoded)
        wire = b"".join(parts)
        object.__setattr__(self, "_wire", wire)
        return wire


def is_transient(reply: Reply) -> bool:
    """A 4xx reply: try again later (RFC 5321 §4.2.1)."""
    return reply.is_transient


def is_permanent(reply: Reply) -> bool:
    """A 5xx reply: do not repeat the same request (RFC 5321 §4.2.1)."""
    return reply.is_permanent


def _clean(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd").replace("\r", "\ufffd")


#: Enhanced status prefixes already seen (``"2.1.0 "``) → the status and whether the prefix
#: is written as the status prints (no leading zeros), which decides whether it is stripped
#: from the text. Bounded, so odd statuses from a peer cannot grow it without limit.
_STATUS_MEMO: dict[str, tuple[EnhancedStatus, bool]] = {}
_STATUS_MEMO_LIMIT = 1024


def _status(m: re.Match[str]) -> tuple[EnhancedStatus, bool]:
    """The status an ``_ENHANCED_PREFIX_RE`` match names, and whether it prints as written."""
    prefix = m[0]
    known = _STATUS_MEMO.get(prefix)
    if known is None:
        status = EnhancedStatus(klass=int(m[1]), subject=int(m[2]), detail=int(m[3]))
        known = (status, prefix.strip() == str(status))
        if len(_STATUS_MEMO) < _STATUS_MEMO_LIMIT:
            _STATUS_MEMO[prefix] = known
    return known


def _parse_one(raw: bytes) -> Reply:
    """:func:`parse_reply` of a one-line reply (the usual case), without the loops."""
    m = _REPLY_LINE_RE.match(raw)
    if m is None:
        raise RemoteProtocolError(f"malformed reply line {raw[:80]!r}")
    if m[2] == b"-":
        raise RemoteProtocolError(f"reply continuation marker misplaced in {raw[:80]!r}")
    code = int(m[1])
    rest = m[3]
    if not rest:
        text = ""
    elif rest.isascii() and b"\x00" not in rest and b"\r" not in rest:
        text = rest.decode("ascii")  # what _clean gives for such text
    else:
        text = _clean(rest)
    status = None
    m2 = _ENHANCED_PREFIX_RE.match(text)
    if m2 is not None and int(m2[1]) == code // 100:
        status, as_printed = _status(m2)
        if as_printed:
            text = text[m2.end() :]
    return Reply(code=code, lines=(text,), enhanced=status)


def parse_reply(raw_lines: Sequence[bytes]) -> Reply:
    """Build a Reply from its received lines (without CRLF), the last one having ``code SP``.

    The enhanced code is taken from the first line when it is present and its class matches
    the reply code (RFC 2034 §4); a matching prefix is stripped from every line. Raises
    RemoteProtocolError when a line is not ``ddd[-| ]text`` or the codes differ.
    """
    if len(raw_lines) == 1:
        return _parse_one(raw_lines[0])
    code = -1
    texts: list[str] = []
    for i, raw in enumerate(raw_lines):
        m = _REPLY_LINE_RE.match(raw)
        if m is None:
            raise RemoteProtocolError(f"malformed reply line {raw[:80]!r}")
        this = int(m[1])
        if code == -1:
            code = this
        elif this != code:
            raise RemoteProtocolError(f"reply code changed from {code} to {this} mid-reply")
        if (m[2] == b"-") != (i < len(raw_lines) - 1):
            raise RemoteProtocolError(f"reply continuation marker misplaced in {raw[:80]!r}")
        texts.append(_clean(m[3] or b""))
    if code == -1:
        raise RemoteProtocolError("empty reply")
    status = None
    m2 = _ENHANCED_PREFIX_RE.match(texts[0])
    if m2 is not None and int(m2[1]) == code // 100:
        status = _status(m2)[0]
        texts = [
            t[mm.end() :]
            if (mm := _ENHANCED_PREFIX_RE.match(t)) and mm[0].strip() == str(status)
            else t
            for t in texts
        ]
    return Reply(code=code, lines=tuple(texts), enhanced=status)


def parse_reply_line(raw: bytes) -> tuple[int, bool] | None:
    """``(code, is_last)`` for one received reply line, or None if it is malformed."""
    m = _REPLY_LINE_RE.match(raw)
    if m is None:
        return None
    return int(m[1]), m[2] != b"-"


# ---------------------------------------------------------------------------------------------
# Factories for replies that carry names.


def greeting(hostname: str, text: str = "ESMTP") -> Reply:
    """``220 hostname ESMTP`` (RFC 5321 §4.2; no enhanced code in a greeting, RFC 2034 §3)."""
    return Reply(code=220, lines=(f"{hostname} {text}".rstrip(),))


def ehlo_reply(hostname: str, extensions: Iterable[str], greeting_text: str = "") -> Reply:
    """``250-hostname …`` followed by one line per extension keyword (RFC 5321 §4.1.1.1)."""
    first = f"{hostname} {greeting_text}".rstrip()
    return Reply(code=250, lines=(first, *extensions))


def helo_reply(hostname: str) -> Reply:
    return Reply(code=250, lines=(hostname,))


def closing(hostname: str) -> Reply:
    """``221 2.0.0 hostname closing connection`` (the reply to QUIT)."""
    return Reply.of(221, "2.0.0", f"{hostname} closing connection")


def message_accepted(queue_id: str) -> Reply:
    """``250 2.0.0 Ok: queued as ID`` (the reply after the message is durable)."""
    return Reply.of(250, "2.0.0", f"Ok: queued as {queue_id}")


# ---------------------------------------------------------------------------------------------
# The catalogue. Names say what happened; comments give the RFC.

#: 250 to MAIL (RFC 3463 X.1.0: other address status).
SENDER_OK = Reply.of(250, "2.1.0", "Sender OK")
#: 250 to RCPT (X.1.5: destination address valid).
RECIPIENT_OK = Reply.of(250, "2.1.5", "Recipient OK")
#: 250 to RSET, NOOP and other commands without a more specific answer.
OK = Reply.of(250, "2.0.0", "OK")
#: 354 to DATA (RFC 5321 §4.2; no enhanced code on intermediate replies).
START_MAIL_INPUT = Reply(code=354, lines=("End data with <CR><LF>.<CR><LF>",))
#: 252 to VRFY: we do not verify addresses (RFC 5321 §3.5.3, §7.3).
CANNOT_VRFY = Reply.of(252, "2.0.0", "Cannot VRFY user, but will accept message")
#: 214 to HELP.
HELP = Reply.of(214, "2.0.0", "See RFC 5321")
#: 220 to STARTTLS (RFC 3207 §4).
READY_TO_START_TLS = Reply.of(220, "2.0.0", "Ready to start TLS")
#: 421 when the service stops (RFC 5321 §3.8; X.3.2: system not accepting messages).
SHUTTING_DOWN = Reply.of(421, "4.3.2", "Service shutting down, closing connection")
#: 421 on an idle or per-command timeout (X.4.2: bad connection).
TIMEOUT = Reply.of(421, "4.4.2", "Timeout exceeded, closing connection")
#: 421 beyond a connection cap (X.7.0: other security status).
TOO_MANY_CONNECTIONS = Reply.of(421, "4.7.0", "Too many connections, try again later")
#: 451 when something local failed (X.3.0).
LOCAL_ERROR = Reply.of(451, "4.3.0", "Local error in processing")
#: 452 when the spool is full (X.3.1, RFC 5321 §4.2.3).
INSUFFICIENT_STORAGE = Reply.of(452, "4.3.1", "Insufficient system storage")
#: 452 for recipients beyond the limit (RFC 5321 §4.5.3.1.10; X.5.3).
TOO_MANY_RECIPIENTS = Reply.of(452, "4.5.3", "Too many recipients")
#: 500 for a command line over 512 octets (RFC 5321 §4.5.3.1.10; X.5.2 syntax error).
LINE_TOO_LONG = Reply.of(500, "5.5.2", "Line too long")
#: 500 for an unknown verb (X.5.1: invalid command).
COMMAND_UNRECOGNIZED = Reply.of(500, "5.5.1", "Command unrecognized")
#: 500 for a NUL octet in a command line (test plan A12).
NUL_IN_COMMAND = Reply.of(500, "5.5.2", "NUL octet not allowed in commands")
#: 500 for a command line ending in a bare LF or containing a bare CR (RFC 5321 §2.3.8).
BARE_LINE_ENDING_IN_COMMAND = Reply.of(500, "5.5.2", "Bare LF or CR not allowed in commands")
#: 501 for invalid UTF-8 in a command line (RFC 6531 §3.3).
INVALID_UTF8 = Reply.of(501, "5.5.2", "Invalid UTF-8 in command")
#: 501 for arguments that do not parse (X.5.4: invalid command arguments).
SYNTAX_ERROR_IN_ARGUMENTS = Reply.of(501, "5.5.4", "Syntax error in parameters or arguments")
#: 501 for arguments on a command that takes none (RFC 5321 §4.1.1).
NO_PARAMETERS_ALLOWED = Reply.of(501, "5.5.4", "Syntax error, no parameters allowed")
#: 501 for a malformed MAIL FROM path (X.1.7: bad sender's mailbox address syntax).
BAD_SENDER_SYNTAX = Reply.of(501, "5.1.7", "Bad sender address syntax")
#: 501 for a malformed RCPT TO path (X.1.3: bad destination mailbox address syntax).
BAD_RECIPIENT_SYNTAX = Reply.of(501, "5.1.3", "Bad recipient address syntax")
#: 501 Path too long (RFC 5321 §4.5.3.1.10), sender side.
SENDER_PATH_TOO_LONG = Reply.of(501, "5.1.7", "Path too long")
#: 501 Path too long (RFC 5321 §4.5.3.1.10), recipient side.
RECIPIENT_PATH_TOO_LONG = Reply.of(501, "5.1.3", "Path too long")
#: 553 for a sender local part over 64 octets or a domain over 255 (RFC 5321 §4.5.3.1.1-2).
SENDER_NAME_TOO_LONG = Reply.of(553, "5.1.7", "Local part or domain too long")
#: 553 for a recipient local part over 64 octets or a domain over 255.
RECIPIENT_NAME_TOO_LONG = Reply.of(553, "5.1.3", "Local part or domain too long")
#: 553 for a non-ASCII address without SMTPUTF8 (RFC 6531 §3.5; X.6.7).
NON_ASCII_ADDRESS = Reply.of(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
#: 501 for a parameter with a bad value or given twice (X.5.4).
BAD_PARAMETER = Reply.of(501, "5.5.4", "Invalid or repeated parameter")
#: 555 for an unknown or unadvertised MAIL/RCPT parameter (RFC 5321 §4.1.1.11; X.5.4).
UNSUPPORTED_PARAMETER = Reply.of(555, "5.5.4", "Unsupported parameter")
#: 502 for a verb we know but do not implement (EXPN, TURN, ...), or BDAT without CHUNKING.
COMMAND_NOT_IMPLEMENTED = Reply.of(502, "5.5.1", "Command not implemented")
#: 503 for a command out of order (RFC 5321 §4.3.2; X.5.1).
BAD_SEQUENCE = Reply.of(503, "5.5.1", "Bad sequence of commands")
#: 503 before EHLO/HELO.
NEED_EHLO = Reply.of(503, "5.5.1", "Send EHLO or HELO first")
#: 503 for RCPT before MAIL.
NEED_MAIL = Reply.of(503, "5.5.1", "Need MAIL command")
#: 503 for DATA/BDAT before any accepted RCPT (RFC 5321 §3.3).
NEED_RCPT = Reply.of(503, "5.5.1", "Need RCPT command")
#: 503 after a 554 greeting: only QUIT is allowed (RFC 5321 §3.1).
ONLY_QUIT = Reply.of(503, "5.5.1", "Only QUIT is allowed now")
#: 552 when MAIL SIZE= or the received data exceed the limit (RFC 1870 §6; X.3.4).
MESSAGE_TOO_BIG = Reply.of(552, "5.3.4", "Message size exceeds fixed limit")
#: 554 for a NUL octet in message content (test plan A12/T17; X.6.0: other media error).
NUL_IN_DATA = Reply.of(554, "5.6.0", "NUL octet not allowed in message content")
#: 554 for a content line over 998 octets (RFC 5321 §4.5.3.1.6) under the reject policy.
LONG_LINE_IN_DATA = Reply.of(554, "5.6.0", "Message has a line longer than 998 octets")
#: 554 and close: a bare LF or CR in message content (RFC 5321 §2.3.8; SMTP smuggling).
BARE_LINE_ENDING_IN_DATA = Reply.of(554, "5.5.2", "Bare LF or CR not allowed, closing")
#: 554 at the end of a BDAT message with a bare LF or CR (framing by count is not at risk,
#: so this one is recoverable).
BARE_LINE_ENDING_IN_CONTENT = Reply.of(554, "5.6.0", "Bare LF or CR not allowed in message content")
#: 554 and close: the client talked before the greeting or before a reply it had to wait for
#: (RFC 2920 §3.1; Postfix's wording for smtpd_forbid_unauth_pipelining).
SYNCHRONIZATION_ERROR = Reply.of(554, "5.5.0", "SMTP protocol synchronization error")
#: 500 and close: a line went on past the scan limit with no CRLF.
LINE_FLOOD = Reply.of(500, "5.5.2", "Line too long, closing")
