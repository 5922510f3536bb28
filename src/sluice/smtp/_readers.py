"""Readers: bytes in the receive buffer → the next unit (command line, reply, content).

Each reader has one contract (h11's): return what it read, return ``None`` for "need more
bytes", or raise RemoteProtocolError (the reply hint says what to send before closing).

* :func:`read_line` — a command line (server role) or a reply line (client role).
* :class:`ReplyReader` — the lines of one (multi-line) reply (client role).
* :class:`DataReader` — DATA content up to ``<CRLF>.<CRLF>`` and nothing else: a bare LF or
  CR is never part of an end of data (SMTP smuggling, test plan A1). Dot-unstuffing applies
  only after a real CRLF. Works on the whole buffer at once with ``bytes.find``; holds back
  at most two octets that could start the end marker.
* :class:`ChunkReader` — exactly ``size`` octets of a BDAT chunk (RFC 3030).

Public names: read_line, ReplyReader, DataReader, ChunkReader.
"""

from __future__ import annotations

from sluice.smtp._content import ContentScanner
from sluice.smtp._errors import RemoteProtocolError
from sluice.smtp._receivebuffer import ReceiveBuffer
from sluice.smtp.limits import MAX_REPLY_SIZE
from sluice.smtp.replies import BARE_LINE_ENDING_IN_DATA, LINE_FLOOD, parse_reply_line

__all__ = ["ChunkReader", "DataReader", "ReplyReader", "read_line"]

_END = b"\r\n.\r\n"
_CRLF_DOT = b"\r\n."


def read_line(buf: ReceiveBuffer, scan_limit: int) -> tuple[bytes, bool] | None:
    """Take one line: ``(line without its ending, ended_with_bare_lf)`` or None.

    Raises RemoteProtocolError (LINE_FLOOD) when ``scan_limit`` octets hold no line end.
    """
    i = buf.find_lf()
    if i < 0:
        if len(buf) > scan_limit:
            raise RemoteProtocolError("no line end within the scan limit", reply=LINE_FLOOD)
        return None
    if i > scan_limit:
        raise RemoteProtocolError("line longer than the scan limit", reply=LINE_FLOOD)
    return buf.take_line(i)


class ReplyReader:
    """Collects the lines of one reply; ``read`` returns them when the last line is in."""

    __slots__ = ("_lines", "_size", "scan_limit")

    def __init__(self, scan_limit: int) -> None:
        self.scan_limit = scan_limit
        self._lines: list[bytes] = []
        self._size = 0

    def read(self, buf: ReceiveBuffer) -> list[bytes] | None:
        while True:
            got = read_line(buf, self.scan_limit)
            if got is None:
                return None
            line = got[0]
            parsed = parse_reply_line(line)
            if parsed is None:
                raise RemoteProtocolError(f"malformed reply line {line[:80]!r}")
            self._lines.append(line)
            self._size += len(line)
            if self._size > MAX_REPLY_SIZE:
                raise RemoteProtocolError("reply longer than MAX_REPLY_SIZE")
            if parsed[1]:
                lines, self._lines, self._size = self._lines, [], 0
                return lines


class DataReader:
    """DATA content (RFC 5321 §4.1.1.4, §4.5.2) through a ContentScanner."""

    __slots__ = ("at_line_start", "scanner")

    def __init__(self, scanner: ContentScanner) -> None:
        self.scanner = scanner
        # The DATA command line ended with CRLF, so content starts at a line start.
        self.at_line_start = True

    def read(self, buf: ReceiveBuffer) -> tuple[bytes, bool] | None:
        """``(content to pass on, ended)`` or None when nothing can be decided yet.

        Raises RemoteProtocolError under the reject policy when the content has a bare LF or
        CR (BARE_LINE_ENDING_IN_DATA: send it and close).
        """
        data = buf.data
        n = len(data)
        if n == 0:
            return None
        start = 0
        if self.at_line_start and data[0] == 0x2E:  # "." at a line start
            if n < 3:
                if data == b"."[:n] or data == b".\r":
                    return None
            elif data[1] == 0x0D and data[2] == 0x0A:
                buf.discard(3)
                return self._feed(b"", ended=True, stuffed=False)
            start = 1  # a transparency dot: drop it (RFC 5321 §4.5.2)
        # One search finds both the end marker and any dot-stuffed line: each starts with
        # CRLF ".". The usual case (no dot line before the end) takes no second search.
        dot = data.find(_CRLF_DOT, start)
        if dot < 0:
            stuffed = False
        elif data[dot + 3 : dot + 5] == b"\r\n":
            seg = bytes(data[start : dot + 2])
            buf.discard(dot + 5)
            return self._feed(seg, ended=True, stuffed=False)
        else:
            stuffed = True
            idx = data.find(_END, dot)
            if idx >= 0:
                seg = bytes(data[start : idx + 2])
                buf.discard(idx + 5)
                return self._feed(seg, ended=True, stuffed=True)
        end = n
        if data.endswith(b"\r\n.\r"):
            end = n - 2
        elif data.endswith(b"\r\n.") or data[-1] == 0x0D:
            end = n - 1
        if end <= start:
            return None
        seg = bytes(data[start:end])
        buf.discard(end)
        self.at_line_start = seg[-2:] == b"\r\n"
        return self._feed(seg, ended=False, stuffed=stuffed)

    def _feed(self, seg: bytes, *, ended: bool, stuffed: bool) -> tuple[bytes, bool]:
        if stuffed and _CRLF_DOT in seg:
            seg = seg.replace(_CRLF_DOT, b"\r\n")
        scanner = self.scanner
        out = scanner.feed(seg) if seg else b""
        if ended:
            out += scanner.finish()
        if scanner.bare:
            raise RemoteProtocolError(
                "bare LF or CR in message content", reply=BARE_LINE_ENDING_IN_DATA
            )
        return out, ended


class ChunkReader:
    """The ``size`` octets of one BDAT chunk (RFC 3030 §2); ``scanner`` None discards them."""

    __slots__ = ("last", "remaining", "scanner")

    def __init__(self, size: int, last: bool, scanner: ContentScanner | None) -> None:
        self.remaining = size
        self.last = last
        self.scanner = scanner

    def read(self, buf: ReceiveBuffer) -> tuple[bytes, bool] | None:
        """``(content to pass on, chunk complete)`` or None when the buffer is empty."""
        if self.remaining == 0:
            return self._done(b"")
        n = min(self.remaining, len(buf))
        if n == 0:
            return None
        self.remaining -= n
        if self.scanner is None:
            buf.discard(n)
            return b"", self.remaining == 0
        out = self.scanner.feed(buf.take(n))
        if self.remaining == 0:
            return self._done(out)
        return out, False

    def _done(self, out: bytes) -> tuple[bytes, bool]:
        if self.last and self.scanner is not None:
            out += self.scanner.finish()
        return out, True
