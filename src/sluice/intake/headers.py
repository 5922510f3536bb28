"""Header edits at intake: read and strip routing headers, add Received/Message-ID/Date.

Pure: bytes in, bytes out, ``now`` and the new Message-ID passed in. The header block is
parsed once (up to the first empty line, or up to the first line that is not a header
field); the body is never copied: the result holds a ``memoryview`` of the input.

Public names:

- :class:`HeaderEdit`: the result (new header bytes, body view, values read).
- :func:`edit_headers`: apply one :class:`~sluice.intake.policy.SourcePolicy`;
  :func:`edit_message`: the same, joined into the bytes to store (the injector's path).
- :func:`received_field`: the Received field this server adds (RFC 5321 §4.4).
- :func:`rfc5322_date`: an RFC 5322 §3.3 date-time for ``now`` (UTC).

Nothing here raises on malformed input: a broken header block is passed through unchanged.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from sluice.intake.policy import SourcePolicy

__all__ = ["HeaderEdit", "edit_headers", "edit_message", "received_field", "rfc5322_date"]

#: RFC 5322 §2.1.1: a line is at most 998 characters; longer header values are cut there
#: when they are read into the envelope (the header itself is passed through).
MAX_VALUE_LENGTH = 998

#: RFC 5322 §2.2: a field name is printable US-ASCII (33–126) except ":", then the colon.
_FIELD_NAME = re.compile(rb"[!-9;-~]+:")
#: The run of header fields at the start of a message, each with its folded continuation
#: lines; a line ends at CRLF (a bare CR or LF inside it is part of it) or at the end of the
#: message. Possessive everywhere: one pass, no backtracking. Used when the policy needs no
#: field names (the usual case), in place of the line-by-line scan.
_LINE_REST = rb"[^\r]*+(?:\r(?!\n)[^\r]*+)*+(?:\r\n|\Z)"
_FIELD_RUN = re.compile(rb"(?:[!-9;-~]+:" + _LINE_REST + rb"(?:[ \t]" + _LINE_REST + rb")*+)*+")

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


#: An alias: mypyc's dataclass support resolves field types by name in this module.
_MemoryView = memoryview


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderEdit:
    """The edited message: ``header`` (ending with the empty line) followed by ``body``."""

    header: bytes
    #: The rest of the message as received, not copied.
    body: _MemoryView
    #: X-Virtual-MTA value (lower case, stripped), when processed and present.
    vmta: str | None = None
    #: Job id from the job header, when processed and present.
    job_id: str | None = None
    #: X-Envid value, when processed and present.
    env_id: str | None = None

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self,
        *,
        header: bytes,
        body: _MemoryView,
        vmta: str | None = None,
        job_id: str | None = None,
        env_id: str | None = None,
    ) -> None:
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "vmta", vmta)
        object.__setattr__(self, "job_id", job_id)
        object.__setattr__(self, "env_id", env_id)

    def size(self) -> int:
        return len(self.header) + len(self.body)


_date_cache: tuple[int, str] = (-1, "")


def rfc5322_date(now: float) -> str:
    """``Mon, 02 Jan 2006 15:04:05 +0000`` for ``now`` (seconds since the epoch), in UTC."""
    global _date_cache
    sec = int(now)
    cached_sec, cached = _date_cache
    if sec == cached_sec:
        return cached
    t = datetime.datetime.fromtimestamp(sec, tz=datetime.UTC)
    text = (
        f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} +0000"
    )
    _date_cache = (sec, text)
    return text


def _clean(text: str, limit: int = 255) -> str:
    """Printable ASCII only, for client-supplied words placed in a header."""
    text = text[:limit]
    if text.isascii() and text.isprintable() and " " not in text:
        return text or "unknown"  # the usual case, without a per-character loop
    return "".join(ch for ch in text if " " < ch < "\x7f") or "unknown"


def received_field(
    *,
    hostname: str,
    helo: str,
    client_ip: str,
    protocol: str,
    now: float,
    hide_source: bool,
    recipient: str | None = None,
) -> bytes:
    """``Received: from HELO ([IP]) by HOST with PROTO; DATE`` (RFC 5321 §4.4), with CRLF.

    ``hide_source`` leaves out the client's HELO name and address (``hide-message-source``).
    ``recipient`` adds a ``for <addr>`` clause (use it only for single-recipient messages).
    """
    key = (hostname, helo, client_ip, protocol, hide_source)
    head = _received_heads.get(key)
    if head is None:
        text = "Received: "
        if not hide_source:
            text += f"from {_clean(helo)} ([{_clean(client_ip, 64)}])\r\n\t"
        head = f"{text}by {_clean(hostname)} with {protocol}".encode("ascii")
        if len(_received_heads) >= _RECEIVED_MEMO_LIMIT:
            _received_heads.clear()
        _received_heads[key] = head
    tail = _date_tail(now)
    if recipient is None:
        return head + tail
    return b"".join((head, f"\r\n\tfor <{_clean(recipient, 256)}>".encode("ascii"), tail))


#: (hostname, HELO, client IP, protocol, hide_source) → the Received field up to the
#: ``for`` clause, encoded: injectors send many messages with the same HELO from one
#: address. Bounded (cleared when full): HELO names come from clients.
_received_heads: dict[tuple[str, str, str, str, bool], bytes] = {}
_RECEIVED_MEMO_LIMIT = 1024


def _date_tail(now: float) -> bytes:
    """``; DATE\r\n`` for ``now``, encoded (the date text is cached per second)."""
    return f"; {rfc5322_date(now)}\r\n".encode("ascii")


def _value(raw: bytes) -> str:
    """The unfolded, stripped value of one field (everything after the first colon)."""
    value = raw[raw.index(b":") + 1 :].replace(b"\r\n", b"").strip()
    return value[:MAX_VALUE_LENGTH].decode("utf-8", "replace")


def edit_message(
    message: bytes,
    *,
    policy: SourcePolicy,
    received: bytes | None,
    now: float,
    message_id: str | None = None,
) -> tuple[bytes, str | None, str | None, str | None]:
    """:func:`edit_headers` with the result joined: ``(header + body, vmta, job_id, env_id)``.

    The usual message (nothing to read or add but the Received field, a header block ending
    with its empty line) costs one scan and one copy: the Received field and the message.
    """
    if not _scans(policy, message_id):
        stop = _FIELD_RUN.match(message).end()  # type: ignore[union-attr]  # matches "" at worst
        if message.startswith(b"\r\n", stop):
            # _pass_through would give exactly these bytes: the fields, the empty line, the body.
            return (message if received is None else received + message), None, None, None
    edit = edit_headers(message, policy=policy, received=received, now=now, message_id=message_id)
    return edit.header + edit.body, edit.vmta, edit.job_id, edit.env_id


def _scans(policy: SourcePolicy, message_id: str | None) -> bool:
    """Does the policy read a field, or add one besides Received?"""
    return (
        policy.process_x_virtual_mta
        or policy.process_x_job
        or policy.process_x_envid
        or policy.add_date_header
        or (message_id is not None and policy.add_message_id_header)
    )


def edit_headers(
    message: bytes,
    *,
    policy: SourcePolicy,
    received: bytes | None,
    now: float,
    message_id: str | None = None,
) -> HeaderEdit:
    """Edit the header block of ``message`` (CRLF line ends) according to ``policy``.

    ``received`` is a ready Received field (see :func:`received_field`), or ``None`` when
    ``add-received-header`` is off. ``message_id`` (``<id@host>``) is added when the message
    has none and ``add-message-id-header`` is on; a Date field when it has none and
    ``add-date-header`` is on. X-Virtual-MTA, the job header and X-Envid are read when their
    ``process-*`` setting is on and then removed unless the matching ``retain-*`` is on
    (X-Envid has no retain setting and is always removed once read; a job header whose name
    does not start with ``X-`` - e.g. ``Message-ID`` - is read but never removed).
    """
    view = memoryview(message)
    if not _scans(policy, message_id):
        return _pass_through(message, view, received)
    # Find the header block: lines that are fields or folded continuations.
    fields: list[tuple[bytes, int, int]] = []  # (lower-case name, start, end incl. CRLF)
    pos = 0
    end = len(message)
    body_start = end
    match_name = _FIELD_NAME.match
    while pos < end:
        eol = message.find(b"\r\n", pos)
        line_end = end if eol < 0 else eol + 2
        if eol == pos:  # the empty line: the body starts after it
            body_start = line_end
            break
        if message[pos] in (0x20, 0x09):
            if not fields:
                body_start = pos
                break
            name, start, _ = fields[-1]
            fields[-1] = (name, start, line_end)
        else:
            m = match_name(message, pos, line_end)
            if m is None:  # not a header line: the body starts here, with no empty line
                body_start = pos
                break
            fields.append((message[pos : m.end() - 1].lower(), pos, line_end))
        pos = line_end

    vmta = job_id = env_id = None
    drop: set[int] = set()
    job_name = policy.jobid_header.lower().encode("ascii")
    strip_job = not policy.retain_x_job and job_name.startswith(b"x-")
    has_msgid = has_date = False
    for index, (name, start, stop) in enumerate(fields):
        if name == b"message-id":
            has_msgid = True
        elif name == b"date":
            has_date = True
        if policy.process_x_virtual_mta and name == b"x-virtual-mta":
            if vmta is None:
                vmta = _value(message[start:stop]).lower() or None
            if not policy.retain_x_virtual_mta:
                drop.add(index)
        elif policy.process_x_job and name == job_name:
            if job_id is None:
                job_id = _value(message[start:stop]) or None
            if strip_job:
                drop.add(index)
        elif policy.process_x_envid and name == b"x-envid":
            if env_id is None:
                env_id = _value(message[start:stop]) or None
            drop.add(index)

    out: list[bytes] = []
    if received is not None:
        out.append(received)
    if drop:
        kept = [(s, e) for i, (_, s, e) in enumerate(fields) if i not in drop]
        out.extend(message[s:e] for s, e in kept)
    else:
        kept = [(0, fields[-1][2])] if fields else []
        if kept:
            out.append(message[: kept[0][1]])
    if kept and message[kept[-1][1] - 2 : kept[-1][1]] != b"\r\n":
        out.append(b"\r\n")  # the last field ran to the end of the message
    if message_id is not None and policy.add_message_id_header and not has_msgid:
        out.append(f"Message-ID: {message_id}\r\n".encode("ascii"))
    if policy.add_date_header and not has_date:
        out.append(f"Date: {rfc5322_date(now)}\r\n".encode("ascii"))
    # The empty line ends the header block: the original one (the body starts after it),
    # or a new one when the message had none.
    out.append(b"\r\n")
    return HeaderEdit(
        header=b"".join(out), body=view[body_start:], vmta=vmta, job_id=job_id, env_id=env_id
    )


def _pass_through(message: bytes, view: memoryview, received: bytes | None) -> HeaderEdit:
    """:func:`edit_headers` when nothing is read, removed or added but the Received field:
    the same result, from one regular-expression pass instead of a scan per line."""
    stop = _FIELD_RUN.match(message).end()  # type: ignore[union-attr]  # it matches "" at worst
    if stop == len(message):
        body_start = stop
    elif message.startswith(b"\r\n", stop):
        body_start = stop + 2
    else:  # a line that is not a header field: the body starts there
        body_start = stop
    out: list[bytes] = []
    if received is not None:
        out.append(received)
    if stop:
        out.append(message[:stop])
        if not message.endswith(b"\r\n", 0, stop):
            out.append(b"\r\n")  # the last field ran to the end of the message
    out.append(b"\r\n")
    return HeaderEdit(header=b"".join(out), body=view[body_start:])
