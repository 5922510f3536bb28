"""RFC 3464 delivery status notifications: who gets one, and the message bytes.

:func:`dsn_recipients` decides which recipients of a message a DSN reports, honouring RFC 3461
NOTIFY (NEVER → none; absent → failures only; SUCCESS and DELAY when asked) and never
answering a message whose sender is the null reverse-path (a bounce is never bounced).
:func:`build_dsn` writes one ``multipart/report; report-type=delivery-status`` message (RFC
6522) for some recipients of one message: a human-readable part, the ``message/delivery-status``
part (RFC 3464 §2) and the original message (``message/rfc822``) or only its header
(``text/rfc822-headers``: RET=HDRS, a non-failure report, content over the size cap, or content
that is not 7-bit clean). The bytes use CRLF line ends, are 7-bit and keep every line within
RFC 5322's 998 octets; the one exception is a sender address that is not ASCII (SMTPUTF8),
which the ``To:`` header must carry as UTF-8 and :attr:`Dsn.smtputf8` flags. The DSN is sent
with ``MAIL FROM:<>`` to the original sender (:meth:`Dsn.envelope`).

Public names: DsnEntry, Dsn, dsn_recipients, build_dsn, DEFAULT_RETURN_LIMIT, MAX_LINE.
Raises: ValueError (a DSN for a null-sender message, no entries, an index out of range).
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from sluice.bounce.diagnostic import Diagnostic, DsnAction
from sluice.message import Envelope, Notify, Recipient

__all__ = [
    "DEFAULT_RETURN_LIMIT",
    "MAX_LINE",
    "Dsn",
    "DsnEntry",
    "build_dsn",
    "dsn_recipients",
]

#: Largest original message returned whole; above it only the header is returned. Postfix's
#: ``bounce_size_limit`` default (50,000 bytes) is the precedent.
DEFAULT_RETURN_LIMIT = 50_000
#: RFC 5322 §2.1.1: a line is at most 998 characters, excluding CRLF.
MAX_LINE = 998
#: RFC 5322 §2.1.1: lines SHOULD stay within 78 characters; fields are folded there.
_FOLD_AT = 78
#: Width of wrapped lines in the human-readable part.
_TEXT_WIDTH = 76
#: RFC 3461 §4.4: ENVID is at most 100 characters.
_MAX_ENVID = 100

_CRLF = "\r\n"
_BARE_LF_RE = re.compile(rb"(?<!\r)\n")
_BARE_CR_RE = re.compile(rb"\r(?!\n)")
_NON_ASCII_RE = re.compile(rb"[^\x00-\x7f]|\x00")
_UNPRINTABLE_RE = re.compile(r"[^\x20-\x7e]")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: Order of sections in the human-readable part and seriousness for the Subject.
_ACTION_ORDER = (DsnAction.FAILED, DsnAction.DELAYED, DsnAction.DELIVERED, DsnAction.RELAYED)
_SUBJECTS = {
    DsnAction.FAILED: "Delivery report: message not delivered",
    DsnAction.DELAYED: "Delivery report: message delayed",
    DsnAction.DELIVERED: "Delivery report: message delivered",
    DsnAction.RELAYED: "Delivery report: message delivered",
}
_INTROS = {
    DsnAction.FAILED: (
        "Your message could not be delivered to the recipients listed below and this "
        "system has stopped trying. The reason follows each address."
    ),
    DsnAction.DELAYED: (
        "Your message has not yet reached the recipients listed below. You do not need to "
        "send it again: this system is still trying."
    ),
    DsnAction.DELIVERED: "Your message was delivered to the recipients listed below.",
    DsnAction.RELAYED: (
        "Your message was handed on to the mail servers of the recipients listed below. "
        "Those servers do not send delivery reports, so no further report will follow."
    ),
}
#: Which NOTIFY flag asks for a report of each action (RFC 3461 §4.1).
_NOTIFY_FOR: dict[DsnAction, Notify] = {
    DsnAction.FAILED: Notify.FAILURE,
    DsnAction.DELAYED: Notify.DELAY,
    DsnAction.DELIVERED: Notify.SUCCESS,
    DsnAction.RELAYED: Notify.SUCCESS,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DsnEntry:
    """One recipient in a DSN: its envelope position, the action and what happened."""

    index: int
    action: DsnAction
    diagnostic: Diagnostic
    #: When the last delivery attempt was made (epoch seconds), if any.
    last_attempt: float | None = None
    #: For ``delayed``: when the message will expire (epoch seconds).
    will_retry_until: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dsn:
    """A DSN ready to queue: sent from the null reverse-path to the original sender."""

    rcpt_to: str
    data: bytes
    message_id: str
    #: The To: header holds a non-ASCII address: the DSN needs SMTPUTF8 to go out.
    smtputf8: bool = False
    mail_from: str = ""

    def envelope(self, *, vmta: str | None = None, arrival: float = 0.0) -> Envelope:
        """The envelope to spool the DSN with: ``MAIL FROM:<>``, one recipient."""
        return Envelope(
            sender=self.mail_from,
            recipients=(Recipient(address=self.rcpt_to),),
            vmta=vmta,
            arrival=arrival,
            smtputf8=self.smtputf8,
        )


def dsn_recipients(envelope: Envelope, indexes: Iterable[int], kind: DsnAction) -> tuple[int, ...]:
    """Which of the recipients at ``indexes`` get a ``kind`` report, in first-seen order.

    None when the sender is the null reverse-path (RFC 5321 §4.5.5: never answer a bounce).
    A recipient with NOTIFY=NEVER gets none; without NOTIFY only failures are reported
    (RFC 3461 §4.1 lets the MTA choose; Sluice reports no delays unasked); otherwise the
    matching flag must be set. Sending ``relayed``/``delivered`` reports is the caller's
    choice: RFC 3461 §6.2 says an MTA that passes NOTIFY on to a DSN-capable next hop
    leaves the success report to it. Raises ValueError for an index out of range.
    """
    wanted = _NOTIFY_FOR[kind]
    seen: set[int] = set()
    out: list[int] = []
    count = len(envelope.recipients)
    for i in indexes:
        if not 0 <= i < count:
            raise ValueError(f"recipient index {i} out of range (0..{count - 1})")
        if i in seen:
            continue
        seen.add(i)
        if envelope.sender == "":
            continue
        notify = envelope.recipients[i].notify
        if notify & Notify.NEVER:
            continue
        if notify == Notify.NONE:
            if kind is DsnAction.FAILED:
                out.append(i)
        elif notify & wanted:
            out.append(i)
    return tuple(out)


def build_dsn(
    *,
    envelope: Envelope,
    entries: Sequence[DsnEntry],
    original: bytes,
    reporting_mta: str,
    postmaster: str,
    now: float,
    make_id: Callable[[], str],
    tz: tzinfo = UTC,
    return_limit: int = DEFAULT_RETURN_LIMIT,
    plain_text: bool = False,
) -> Dsn:
    """The DSN for ``entries`` (recipients of the message ``envelope``/``original``).

    ``postmaster`` is the From: address (``postmaster`` directive, or MAILER-DAEMON@host);
    ``reporting_mta`` the host name for Reporting-MTA; ``now`` the Date (epoch seconds, shown
    in ``tz``); ``make_id`` returns a fresh Message-ID (with or without angle brackets);
    ``return_limit`` caps the returned original; ``plain_text`` is ``dsn-format plain-text``
    (the delivery-status fields go in a text/plain part). Raises ValueError for a message from
    the null sender, no entries, or an index out of range.
    """
    if envelope.sender == "":
        raise ValueError("no DSN for a message from the null reverse-path")
    if not entries:
        raise ValueError("a DSN reports at least one recipient")
    for entry in entries:
        if not 0 <= entry.index < len(envelope.recipients):
            raise ValueError(f"recipient index {entry.index} out of range")

    message_id = _angle(make_id())
    original = _canonical(original)
    human = _human_part(envelope, entries, reporting_mta, tz)
    status = _status_part(envelope, entries, reporting_mta, tz)
    boundary = _boundary(message_id, (original, human.encode("ascii"), status.encode("ascii")))
    actions = {e.action for e in entries}
    worst = next(a for a in _ACTION_ORDER if a in actions)
    sender_ascii = envelope.sender.isascii()

    head = [
        _field("From", f"Mail Delivery System <{postmaster}>"),
        f"To: <{envelope.sender}>" if not sender_ascii else _field("To", f"<{envelope.sender}>"),
        _field("Subject", _SUBJECTS[worst]),
        _field("Date", _date(now, tz)),
        _field("Message-ID", message_id),
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        _field(
            "Content-Type",
            f'multipart/report; report-type=delivery-status; boundary="{boundary}"',
        ),
        "",
        "This is a MIME-encapsulated message.",
    ]
    # Each delimiter line is preceded by a CRLF that belongs to it (RFC 2046 §5.1.1), so every
    # part keeps its own final line end.
    parts: list[str | bytes] = [_CRLF.join(head) + _CRLF]

    parts.append(f"{_CRLF}--{boundary}{_CRLF}")
    parts.append(_part_head("text/plain; charset=us-ascii", "Notification") + human)

    kind = "text/plain; charset=us-ascii" if plain_text else "message/delivery-status"
    parts.append(f"{_CRLF}--{boundary}{_CRLF}")
    parts.append(_part_head(kind, "Delivery report") + status)

    full = worst is DsnAction.FAILED and (envelope.ret or "").upper() != "HDRS"
    part_head, part_body = _returned_part(original, full=full, limit=return_limit)
    parts.append(f"{_CRLF}--{boundary}{_CRLF}")
    parts.append(part_head)
    parts.append(part_body)
    parts.append(f"{_CRLF}--{boundary}--{_CRLF}")

    data = b"".join(p if isinstance(p, bytes) else p.encode("utf-8") for p in parts)
    return Dsn(
        rcpt_to=envelope.sender,
        data=data,
        message_id=message_id,
        smtputf8=not sender_ascii,
    )


# --- the parts -------------------------------------------------------------------------------


def _human_part(
    envelope: Envelope, entries: Sequence[DsnEntry], reporting_mta: str, tz: tzinfo
) -> str:
    lines = [f"This is the mail system at {_ascii(reporting_mta)}.", ""]
    for action in _ACTION_ORDER:
        chosen = [e for e in entries if e.action is action]
        if not chosen:
            continue
        lines.extend(_wrap(_INTROS[action], ""))
        lines.append("")
        for e in chosen:
            address = _ascii(envelope.recipients[e.index].address)
            lines.extend(_wrap(f"<{address}>", ""))
            diag = e.diagnostic
            where = f"{_ascii(diag.remote_mta)} said: " if diag.remote_mta and diag.code else ""
            lines.extend(_wrap(where + _ascii(diag.reply), "    "))
            if action is DsnAction.DELAYED and e.will_retry_until is not None:
                lines.extend(_wrap(f"Still trying until {_date(e.will_retry_until, tz)}.", "    "))
            lines.append("")
    if lines[-1] == "":
        lines.pop()
    return _CRLF.join(lines) + _CRLF


def _status_part(
    envelope: Envelope, entries: Sequence[DsnEntry], reporting_mta: str, tz: tzinfo
) -> str:
    # RFC 3464 §2.2: per-message fields, a blank line, then one block per recipient (§2.3).
    block = [_field("Reporting-MTA", f"dns; {_ascii(reporting_mta)}")]
    if envelope.env_id:
        block.append(_field("Original-Envelope-Id", _ascii(envelope.env_id)[:_MAX_ENVID]))
    if envelope.arrival > 0:
        block.append(_field("Arrival-Date", _date(envelope.arrival, tz)))
    blocks = [block]
    for e in entries:
        rcpt = envelope.recipients[e.index]
        diag = e.diagnostic
        block = []
        if rcpt.orcpt:
            addr_type, sep, addr = rcpt.orcpt.partition(";")
            if not sep:
                addr_type, addr = "rfc822", rcpt.orcpt
            block.append(_field("Original-Recipient", _typed_address(addr_type, addr)))
        block.append(_field("Final-Recipient", _typed_address("rfc822", rcpt.address)))
        block.append(f"Action: {e.action.value}")
        block.append(f"Status: {diag.status}")
        if diag.remote_mta:
            block.append(_field("Remote-MTA", f"dns; {_ascii(diag.remote_mta)}"))
        if diag.is_remote:
            block.append(_field("Diagnostic-Code", f"smtp; {_ascii(diag.reply)}"))
        elif diag.text:
            block.append(_field("Diagnostic-Code", f"X-Sluice; {_ascii(diag.text)}"))
        if e.last_attempt is not None:
            block.append(_field("Last-Attempt-Date", _date(e.last_attempt, tz)))
        if e.action is DsnAction.DELAYED and e.will_retry_until is not None:
            block.append(_field("Will-Retry-Until", _date(e.will_retry_until, tz)))
        blocks.append(block)
    # Blocks are separated by one blank line; the last ends with its field's CRLF.
    return (_CRLF + _CRLF).join(_CRLF.join(b) for b in blocks) + _CRLF


def _returned_part(original: bytes, *, full: bool, limit: int) -> tuple[str, bytes]:
    """(part header text, part body) for the returned message or its header."""
    if full and len(original) <= limit and _seven_bit_lines(original):
        body = original if original.endswith(b"\r\n") else original + b"\r\n"
        return _part_head("message/rfc822", "Undelivered message"), body
    end = original.find(b"\r\n\r\n")
    header = original if end < 0 else original[: end + 2]
    if original.startswith(b"\r\n"):
        header = b""
    if len(header) > limit:
        cut = header.rfind(b"\r\n", 0, limit)
        header = header[: cut + 2] if cut >= 0 else b""
    if header and not header.endswith(b"\r\n"):
        header += b"\r\n"
    encoding = "7bit"
    if not _seven_bit_lines(header):
        # RFC 2045 §6.7: quoted-printable keeps 8-bit or over-long header lines 7-bit safe.
        header = binascii.b2a_qp(header, quotetabs=False, istext=True, header=False)
        header = _canonical(header)
        encoding = "quoted-printable"
    head = _part_head("text/rfc822-headers", "Header of the original message", encoding)
    return head, header


# --- formatting helpers ----------------------------------------------------------------------


def _part_head(content_type: str, description: str, encoding: str = "7bit") -> str:
    """The header of one body part, ending with the blank line."""
    return (
        f"Content-Type: {content_type}{_CRLF}Content-Description: {description}{_CRLF}"
        f"Content-Transfer-Encoding: {encoding}{_CRLF}{_CRLF}"
    )


def _canonical(data: bytes) -> bytes:
    """Bare LF and bare CR become CRLF (no copy when already canonical)."""
    if b"\n" in data and _BARE_LF_RE.search(data) is not None:
        data = _BARE_LF_RE.sub(b"\r\n", data)
    if b"\r" in data and _BARE_CR_RE.search(data) is not None:
        data = _BARE_CR_RE.sub(b"\r\n", data)
    return data


def _seven_bit_lines(data: bytes) -> bool:
    """7-bit, no NUL, every line within :data:`MAX_LINE` (RFC 2045 §2.7 "7bit data")."""
    if _NON_ASCII_RE.search(data) is not None:
        return False
    return all(len(line) <= MAX_LINE for line in data.split(b"\r\n"))


def _boundary(message_id: str, contents: Iterable[bytes]) -> str:
    """A boundary that occurs in none of the parts' ``contents`` (RFC 2046 §5.1.1).

    ``=_`` cannot occur in quoted-printable text, so a header returned encoded is safe too.
    """
    texts = tuple(contents)
    seed = hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()
    n = 0
    while True:
        boundary = f"=_sluice-dsn-{seed[:16]}-{n}"
        if not any(boundary.encode("ascii") in t for t in texts):
            return boundary
        n += 1


def _angle(message_id: str) -> str:
    text = _ascii(message_id.strip()).replace(" ", "")
    if not (text.startswith("<") and text.endswith(">")):
        text = f"<{text.strip('<>')}>"
    return text


def _date(epoch: float, tz: tzinfo) -> str:
    """RFC 5322 §3.3 date-time, without locale-dependent names."""
    dt = datetime.fromtimestamp(int(epoch), tz)
    return (
        f"{_DAYS[dt.weekday()]}, {dt.day:02d} {_MONTHS[dt.month - 1]} {dt.year:04d} "
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} {dt.strftime('%z') or '+0000'}"
    )


def _ascii(text: str) -> str:
    """Printable US-ASCII: anything else becomes ``?`` (the DSN stays 7-bit)."""
    return _UNPRINTABLE_RE.sub("?", text)


def _typed_address(addr_type: str, address: str) -> str:
    """``rfc822; addr``, or RFC 6533 §3 ``utf-8; addr`` with ``\\x{HEX}`` for non-ASCII."""
    addr_type = _ascii(addr_type.strip()) or "rfc822"
    if address.isascii():
        return f"{addr_type}; {_ascii(address)}"
    escaped = "".join(
        ch if 0x20 < ord(ch) < 0x7F and ch != "\\" else f"\\x{{{ord(ch):X}}}" for ch in address
    )
    return f"utf-8; {escaped}"


def _field(name: str, value: str) -> str:
    """``Name: value`` folded at spaces near 78 columns, and hard-split within 998."""
    words = value.split(" ")
    lines: list[str] = []
    line = f"{name}:"
    for word in words:
        if not word:
            continue
        if len(line) + 1 + len(word) > _FOLD_AT and line.strip() and line != f"{name}:":
            lines.append(line)
            line = ""
        line = f"{line} {word}"
        while len(line) > MAX_LINE:
            lines.append(line[:MAX_LINE])
            line = " " + line[MAX_LINE:]
    lines.append(line)
    return _CRLF.join(lines)


def _wrap(text: str, indent: str) -> list[str]:
    """Word-wrap ``text`` to :data:`_TEXT_WIDTH` columns behind ``indent``."""
    out: list[str] = []
    line = indent
    for whole in text.split():
        word = whole
        while len(word) > _TEXT_WIDTH:
            if line.strip():
                out.append(line)
            out.append(indent + word[:_TEXT_WIDTH])
            word = word[_TEXT_WIDTH:]
            line = indent
        if line.strip() and len(line) + 1 + len(word) > _TEXT_WIDTH:
            out.append(line)
            line = indent
        line = f"{line} {word}" if line.strip() else f"{indent}{word}"
    if line.strip() or not out:
        out.append(line)
    return out
