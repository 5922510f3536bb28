"""Size limits of the SMTP engine: RFC 5321 §4.5.3.1 as named constants, plus configurable ones.

Every number here is a named constant with the RFC section (or the precedent) it comes from.
Lengths are in octets; "including CRLF" is said where the RFC counts the line ending.

Public names: the constants below, BareLineEnding, LongLinePolicy, Limits (raises ValueError
on nonsense values).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_RECIPIENTS",
    "LINE_SCAN_LIMIT",
    "MAX_AUTH_LINE",
    "MAX_COMMAND_LINE",
    "MAX_DOMAIN",
    "MAX_ENVID",
    "MAX_LOCAL_PART",
    "MAX_ORCPT",
    "MAX_PARAMETER_LINE",
    "MAX_PATH",
    "MAX_REPLY_LINE",
    "MAX_REPLY_SIZE",
    "MAX_TEXT_LINE",
    "MIN_RECIPIENTS_BUFFER",
    "BareLineEnding",
    "Limits",
    "LongLinePolicy",
]

#: RFC 5321 §4.5.3.1.1: the local part of a mailbox, at most 64 octets.
MAX_LOCAL_PART = 64
#: RFC 5321 §4.5.3.1.2: a domain, at most 255 octets.
MAX_DOMAIN = 255
#: RFC 5321 §4.5.3.1.3: a reverse- or forward-path, at most 256 octets including the angle
#: brackets and the source route.
MAX_PATH = 256
#: RFC 5321 §4.5.3.1.4: a command line, at most 512 octets including the verb and the CRLF.
#: RFC 1870 §3/RFC 3461 §4 let each MAIL/RCPT parameter extension add to it; we allow the
#: parameters of SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY and ORCPT on top (see below).
MAX_COMMAND_LINE = 512
#: RFC 3461 §4.4: ENVID is at most 100 characters (before xtext decoding).
MAX_ENVID = 100
#: RFC 3461 §4.2: ORCPT is at most 500 characters.
MAX_ORCPT = 500
#: RFC 5321 §4.5.3.1.4 + RFC 3461: MAIL/RCPT lines may grow by their parameters' lengths.
MAX_PARAMETER_LINE = MAX_COMMAND_LINE + MAX_ENVID + MAX_ORCPT + 100
#: RFC 4954 §4: an AUTH command or response line may be up to 12,288 octets.
MAX_AUTH_LINE = 12288
#: RFC 5321 §4.5.3.1.5: a reply line, at most 512 octets including the code and the CRLF.
MAX_REPLY_LINE = 512
#: RFC 5321 §4.5.3.1.6: a text line of message content, at most 1000 octets including the CRLF
#: and not counting a transparency dot (so 998 octets of content; RFC 5322 §2.1.1 says the same).
MAX_TEXT_LINE = 1000
#: RFC 5321 §4.5.3.1.8: a server must buffer at least 100 recipients.
MIN_RECIPIENTS_BUFFER = 100
#: How far we look for a CRLF before calling an unterminated line a flood and closing.
#: Precedent: h11's DEFAULT_MAX_INCOMPLETE_EVENT_SIZE (16 KiB, after node.js, Tomcat, IIS);
#: it also covers RFC 4954's 12,288-octet AUTH line. Lines longer than the command limit but
#: shorter than this get a recoverable "500 5.5.2 Line too long"; longer ones are fatal.
LINE_SCAN_LIMIT = 16 * 1024
#: A received multi-line reply may not exceed this many octets in total (client role).
#: EHLO replies are the longest in practice (a few hundred octets); 64 KiB is generous.
MAX_REPLY_SIZE = 64 * 1024
#: Postfix's ``message_size_limit`` default (10,240,000 octets), the RFC 1870 SIZE we advertise
#: unless configured (PowerMTA's ``max-message-size`` overrides it).
DEFAULT_MAX_MESSAGE_SIZE = 10_240_000
#: Postfix's ``smtpd_recipient_limit`` default (1,000); RFC 5321 §4.5.3.1.8 asks for >= 100.
DEFAULT_MAX_RECIPIENTS = 1000


class BareLineEnding(enum.Enum):
    """What the server does with a bare LF or bare CR (not part of CRLF) in a command or in
    message content (RFC 5321 §2.3.8; the SMTP smuggling fixes of Postfix and Sendmail).

    Neither policy ever treats a bare LF or bare CR as part of an end of data: only
    ``<CRLF>.<CRLF>`` ends DATA.
    """

    #: Refuse: in message content this is fatal (554 5.5.2 and close, like Postfix
    #: ``smtpd_forbid_bare_newline=reject`` and Sendmail's ``g``/``u``); a command line ending in
    #: a bare LF gets 500 5.5.2.
    REJECT = "reject"
    #: Accept and convert each bare LF or bare CR to CRLF (Postfix ``normalize``). A dot after a
    #: bare line ending is content, not a transparency dot, so it is kept.
    NORMALIZE = "normalize"


class LongLinePolicy(enum.Enum):
    """What the server does with a content line longer than 998 octets (RFC 5321 §4.5.3.1.6)."""

    #: Refuse the message at its end: 554 5.6.0 (the body is still read to its end).
    REJECT = "reject"
    #: Accept it; ``EndOfData.long_lines`` is true so the caller can wrap the line before
    #: relaying (Sluice never emits a line over 998 octets, whatever it accepts).
    ACCEPT = "accept"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The configurable limits of one Connection (PowerMTA ``<source>`` settings feed it)."""

    #: Largest message in octets (after dot-unstuffing); None means no limit. Enforced while
    #: receiving: the engine stops passing on content once it is exceeded and suggests
    #: 552 5.3.4 at the end. Also checked against MAIL ... SIZE=n (RFC 1870 §6).
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    #: Recipients accepted per transaction; beyond it the engine answers RCPT itself with
    #: 452 4.5.3 (RFC 5321 §4.5.3.1.10). None means no limit.
    max_recipients: int | None = DEFAULT_MAX_RECIPIENTS
    #: Longest command line the engine accepts (including CRLF), RFC 5321 §4.5.3.1.4.
    max_command_line: int = MAX_COMMAND_LINE
    #: Longest unterminated line kept while waiting for its CRLF; beyond it: fatal.
    line_scan_limit: int = LINE_SCAN_LIMIT

    def __post_init__(self) -> None:
        if self.max_message_size is not None and self.max_message_size < 0:
            raise ValueError("max_message_size must be >= 0 or None")
        if self.max_recipients is not None and self.max_recipients < 1:
            raise ValueError("max_recipients must be >= 1 or None")
        if self.max_command_line < MAX_COMMAND_LINE:
            raise ValueError(f"max_command_line must be >= {MAX_COMMAND_LINE} (RFC 5321)")
        if self.line_scan_limit < max(self.max_command_line, MAX_AUTH_LINE):
            raise ValueError("line_scan_limit must cover max_command_line and an AUTH line")
