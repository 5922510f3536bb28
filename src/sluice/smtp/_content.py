"""Message content checks on receive, and canonical encoding on send.

Receive: :class:`ContentScanner` takes content (already dot-unstuffed) piece by piece and,
with C-speed ``bytes`` methods only (no per-byte or per-line Python loops on the fast path),
finds bare CR/LF (compare the counts of CRLF, LF and CR), NUL octets, lines over 998 octets,
and the running size; it normalises bare line endings under that policy and stops passing
content on once the message is known to be refused (bounded memory: nothing is kept).

Send: :class:`BodyEncoder` turns arbitrary content into what may go on the wire in DATA:
every bare CR or LF becomes CRLF, lines starting with a dot get another (RFC 5321 §4.5.2),
and a NUL or a line over 998 octets raises LocalProtocolError before any of that piece is
returned (the caller must wrap or refuse such a message; see :func:`check_body`).

Public names: ContentScanner, BodyEncoder, check_body, inspect_body, MAX_CONTENT_LINE.
"""

from __future__ import annotations

import re

from sluice.smtp._errors import LocalProtocolError
from sluice.smtp.limits import MAX_TEXT_LINE, BareLineEnding, LongLinePolicy
from sluice.smtp.replies import (
    BARE_LINE_ENDING_IN_CONTENT,
    LONG_LINE_IN_DATA,
    MESSAGE_TOO_BIG,
    NUL_IN_DATA,
    Reply,
)

__all__ = [
    "MAX_CONTENT_LINE",
    "BodyEncoder",
    "ContentScanner",
    "check_body",
    "has_bare_line_ending",
    "inspect_body",
    "longest_line_exceeds",
]

#: RFC 5321 §4.5.3.1.6 / RFC 5322 §2.1.1: 998 octets of text before the CRLF.
MAX_CONTENT_LINE = MAX_TEXT_LINE - 2


def _normalize(seg: bytes) -> bytes:
    """Every CRLF, bare CR and bare LF → CRLF (three C passes)."""
    return seg.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


#: A line that starts with a dot, which gets another (RFC 5321 §4.5.2).
_DOT_LINE = re.compile(rb"\r\n\.")

#: Byte → 1 for CR (resp. LF), 0 otherwise: ``bytes.translate`` tables for the pairing check.
_CR_MARKS = bytes(int(i == 0x0D) for i in range(256))
_LF_MARKS = bytes(int(i == 0x0A) for i in range(256))


def has_bare_line_ending(seg: bytes) -> bool:
    """Is there a CR not followed by LF, or an LF not preceded by CR (a final CR counts)?

    Two C-level passes and one comparison, whatever the number of lines: the content is
    canonical exactly when the CR positions, shifted by one, are the LF positions.
    """
    if not seg:
        return False
    if seg[0] == 0x0A or seg[-1] == 0x0D:
        return True
    return seg.translate(_CR_MARKS)[:-1] != seg.translate(_LF_MARKS)[1:]


def longest_line_exceeds(out: bytes, line_len: int, limit: int) -> tuple[bool, int]:
    """Given canonical CRLF content continuing a line of ``line_len`` octets: does any line
    exceed ``limit``, and how long is the unfinished last line?

    Lines between the first and the last CRLF are checked by jumps, not one by one: from a
    line start, the last CRLF within ``limit + 2`` octets ends a run of short lines (none
    there means a long line). Each jump passes at least one line and, unless lines are
    longer than half the limit, about a limit's worth of octets.
    """
    first = out.find(b"\r\n")
    if first < 0:
        line_len += len(out)
        return line_len > limit, line_len
    if line_len + first > limit:
        return True, 0
    last = out.rfind(b"\r\n")
    pos = first + 2
    while last - pos > limit:
        j = out.rfind(b"\r\n", pos, pos + limit + 2)
        if j < 0:
            return True, 0
        pos = j + 2
    tail = len(out) - last - 2
    return tail > limit, tail


class ContentScanner:
    """Checks received content and decides whether to pass it on (see module docstring)."""

    __slots__ = (
        "bare",
        "bare_policy",
        "line_len",
        "long_lines",
        "long_policy",
        "max_size",
        "nul",
        "pending_cr",
        "size",
        "too_big",
    )

    def __init__(
        self, bare_policy: BareLineEnding, long_policy: LongLinePolicy, max_size: int | None
    ) -> None:
        self.bare_policy = bare_policy
        self.long_policy = long_policy
        self.max_size = max_size
        self.size = 0
        self.line_len = 0
        self.bare = False
        self.nul = False
        self.long_lines = False
        self.too_big = False
        self.pending_cr = False

    @property
    def refused(self) -> bool:
        """The message will be refused: stop keeping content."""
        return (
            self.too_big
            or self.nul
            or self.bare
            or (self.long_lines and self.long_policy is LongLinePolicy.REJECT)
        )

    def feed(self, seg: bytes) -> bytes:
        """Check one piece; return the content to pass on (``b""`` once refused)."""
        if self.pending_cr:
            seg = b"\r" + seg
            self.pending_cr = False
        if seg[-1:] == b"\r":
            # Its LF may come with the next piece (BDAT chunks split anywhere).
            seg = seg[:-1]
            self.pending_cr = True
        if not seg:
            return b""
        if (b"\r" in seg or b"\n" in seg) and has_bare_line_ending(seg):
            if self.bare_policy is BareLineEnding.REJECT:
                self.bare = True
            else:
                seg = _normalize(seg)
        if b"\x00" in seg:
            self.nul = True
        if not self.long_lines:
            line_len = self.line_len + len(seg)
            if line_len > MAX_CONTENT_LINE:
                self.long_lines, self.line_len = longest_line_exceeds(
                    seg, self.line_len, MAX_CONTENT_LINE
                )
            else:
                nl = seg.rfind(b"\n")
                self.line_len = line_len if nl < 0 else len(seg) - nl - 1
        size = self.size = self.size + len(seg)
        if self.max_size is not None and size > self.max_size:
            self.too_big = True
        if self.too_big or self.nul or self.bare or self.long_lines:
            return b"" if self.refused else seg
        return seg

    def finish(self) -> bytes:
        """End of content: a CR still pending is bare. Returns what is left to pass on."""
        if not self.pending_cr:
            return b""
        self.pending_cr = False
        if self.bare_policy is BareLineEnding.REJECT:
            self.bare = True
            return b""
        return self.feed(b"\r\n")

    def reject(self) -> Reply | None:
        """The reply that refuses this content, or None if it is acceptable."""
        if self.too_big:
            return MESSAGE_TOO_BIG
        if self.bare:
            return BARE_LINE_ENDING_IN_CONTENT
        if self.nul:
            return NUL_IN_DATA
        if self.long_lines and self.long_policy is LongLinePolicy.REJECT:
            return LONG_LINE_IN_DATA
        return None


def inspect_body(body: bytes) -> tuple[str | None, bool]:
    """``(why body cannot be sent as is, body is canonical CRLF)``: the first item is what
    :func:`check_body` returns; the second says no line ending needs converting.

    C-level passes only: NUL, the CR/LF pairing check, then the long-line jumps (only for a
    body longer than one line can be). A canonical body is scanned as it is, never copied.
    """
    if b"\x00" in body:
        return "nul", False
    if (b"\r" in body or b"\n" in body) and has_bare_line_ending(body):
        canonical = False
        canon = _normalize(body)
    else:
        canonical = True
        canon = body
    # Normalising never lengthens a line, so a body no longer than the limit has no long line.
    if len(body) > MAX_CONTENT_LINE and longest_line_exceeds(canon, 0, MAX_CONTENT_LINE)[0]:
        return "long-line", canonical
    return None, canonical


def check_body(body: bytes) -> str | None:
    """Why ``body`` cannot be sent as is (``"nul"`` or ``"long-line"``), or None.

    Line endings are counted after normalisation (any CR, LF or CRLF ends a line). Call it
    before DATA: a message that fails needs wrapping (long lines) or refusal (NUL).
    """
    return inspect_body(body)[0]


class BodyEncoder:
    """Client side of DATA content: canonical CRLF, dot-stuffing, refusal of NUL and long
    lines. Keeps a trailing CR across pieces so a CRLF split between two pieces stays one."""

    __slots__ = ("at_line_start", "line_len", "pending_cr")

    def __init__(self) -> None:
        self.at_line_start = True
        self.pending_cr = False
        self.line_len = 0

    def encode(self, data: bytes) -> bytes:
        """One piece of content → wire bytes. Raises LocalProtocolError (NUL, long line)."""
        if self.pending_cr:
            data = b"\r" + data
            self.pending_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self.pending_cr = True
        if not data:
            return b""
        if b"\x00" in data:
            raise LocalProtocolError("message content has a NUL octet: refuse it (never sent)")
        if (b"\r" in data or b"\n" in data) and has_bare_line_ending(data):
            data = _normalize(data)
        if self.line_len + len(data) > MAX_CONTENT_LINE:
            long, self.line_len = longest_line_exceeds(data, self.line_len, MAX_CONTENT_LINE)
            if long:
                raise LocalProtocolError(
                    "message content has a line over 998 octets: wrap or refuse it (never sent)"
                )
        else:
            nl = data.rfind(b"\n")
            self.line_len = self.line_len + len(data) if nl < 0 else len(data) - nl - 1
        if _DOT_LINE.search(data) is not None:  # the regex finds it faster than ``in``
            data = data.replace(b"\r\n.", b"\r\n..")
        if self.at_line_start and data[:1] == b".":
            data = b"." + data
        self.at_line_start = data.endswith(b"\r\n")
        return data

    def encode_inspected(self, data: bytes) -> bytes:
        """:meth:`encode` for content that :func:`inspect_body` found sendable and canonical
        (``(None, True)``), at the start of the content: the same bytes, without the NUL,
        line-ending and line-length passes that cannot change or refuse it. Only the engine
        calls it, with the very bytes object it inspected; anywhere but at the start of the
        content it is plain :meth:`encode`."""
        if self.pending_cr or not self.at_line_start or self.line_len or not data:
            return self.encode(data)
        # Canonical content does not end with a bare CR, so nothing is held back; every LF
        # ends a CRLF, so the unfinished last line starts after the last LF.
        self.line_len = len(data) - data.rfind(b"\n") - 1
        if _DOT_LINE.search(data) is not None:
            data = data.replace(b"\r\n.", b"\r\n..")
        if data[:1] == b".":
            data = b"." + data
        self.at_line_start = data.endswith(b"\r\n")
        return data

    def finish(self) -> bytes:
        """Bytes that end the content: a pending CR becomes CRLF, the last line gets its CRLF
        if it lacks one, then ``.CRLF`` (RFC 5321 §4.1.1.4)."""
        out = b""
        if self.pending_cr:
            self.pending_cr = False
            out = b"\r\n"
            self.at_line_start = True
        if not self.at_line_start:
            out += b"\r\n"
        self.at_line_start = True
        self.line_len = 0
        return out + b".\r\n"
