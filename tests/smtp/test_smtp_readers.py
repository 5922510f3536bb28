"""Readers fed whole, one byte at a time, and with trailing junk (h11's tr())."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from smtp_helpers import tr

from sluice.smtp import RemoteProtocolError
from sluice.smtp._content import ContentScanner, has_bare_line_ending, longest_line_exceeds
from sluice.smtp._readers import ChunkReader, DataReader, ReplyReader, read_line
from sluice.smtp._receivebuffer import ReceiveBuffer
from sluice.smtp.limits import LINE_SCAN_LIMIT, BareLineEnding, LongLinePolicy
from sluice.smtp.replies import LINE_FLOOD, parse_reply


def _scanner(policy: BareLineEnding = BareLineEnding.REJECT) -> ContentScanner:
    return ContentScanner(policy, LongLinePolicy.REJECT, None)


def _whole_data(
    policy: BareLineEnding = BareLineEnding.REJECT,
) -> Callable[[ReceiveBuffer], object]:
    """A DataReader wrapped to return the whole content once the end is seen."""
    reader = DataReader(_scanner(policy))
    parts: list[bytes] = []

    def read(buf: ReceiveBuffer) -> object:
        while True:
            got = reader.read(buf)
            if got is None:
                return None
            out, ended = got
            parts.append(out)
            if ended:
                return b"".join(parts)
            if not buf or got == (b"", False):
                return None

    return read


def test_read_line() -> None:
    tr(lambda b: read_line(b, 100), b"MAIL FROM:<a@b>\r\n", (b"MAIL FROM:<a@b>", False))
    tr(lambda b: read_line(b, 100), b"NOOP\n", (b"NOOP", True))
    tr(lambda b: read_line(b, 100), b"\r\n", (b"", False))


def test_read_line_flood() -> None:
    buf = ReceiveBuffer()
    buf.append(b"x" * (LINE_SCAN_LIMIT + 1))
    with pytest.raises(RemoteProtocolError) as info:
        read_line(buf, LINE_SCAN_LIMIT)
    assert info.value.reply is LINE_FLOOD
    assert info.value.reply_hint is not None
    assert info.value.reply_hint.code == 500


@pytest.mark.parametrize(
    ("wire", "code", "enhanced", "lines"),
    [
        (b"250 OK\r\n", 250, None, ("OK",)),
        (b"250\r\n", 250, None, ("",)),
        (b"550 5.1.1 No such user\r\n", 550, "5.1.1", ("No such user",)),
        (
            b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n",
            250,
            None,
            ("mx.test", "PIPELINING", "SIZE 100"),
        ),
        (b"451-4.3.0 one\r\n451 4.3.0 two\r\n", 451, "4.3.0", ("one", "two")),
        # class of the enhanced code must match the reply code to count as one
        (b"250 5.1.1 odd\r\n", 250, None, ("5.1.1 odd",)),
    ],
)
def test_reply_reader(wire: bytes, code: int, enhanced: str | None, lines: tuple[str, ...]) -> None:
    reader = ReplyReader(LINE_SCAN_LIMIT)
    tr(reader.read, wire, list(wire.split(b"\r\n")[:-1]))
    reply = parse_reply(wire.split(b"\r\n")[:-1])
    assert reply.code == code
    assert (str(reply.enhanced) if reply.enhanced else None) == enhanced
    assert reply.lines == lines
    # Serialising the parsed reply gives the same wire form back.
    assert reply.to_bytes() == wire


@pytest.mark.parametrize("wire", [b"hello\r\n", b"25 x\r\n", b"250x\r\n", b"999 x\r\n"])
def test_reply_reader_rejects_garbage(wire: bytes) -> None:
    buf = ReceiveBuffer()
    buf.append(wire)
    with pytest.raises(RemoteProtocolError):
        ReplyReader(LINE_SCAN_LIMIT).read(buf)


def test_parse_reply_rejects_changing_codes() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_reply([b"250-a", b"251 b"])


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b".\r\n", b""),
        (b"hello\r\n.\r\n", b"hello\r\n"),
        (b"..leading\r\n.\r\n", b".leading\r\n"),
        (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n"),
        (b"a\r\n...b\r\n.\r\n", b"a\r\n..b\r\n"),
        (b"a\r\n.b\r\n.\r\n", b"a\r\nb\r\n"),
        (b"\r\n\r\n.\r\n", b"\r\n\r\n"),
    ],
)
def test_data_reader(wire: bytes, content: bytes) -> None:
    # A fresh reader per tr() leg: build it inside.
    for policy in BareLineEnding:
        legs: list[Callable[[ReceiveBuffer], object]] = [_whole_data(policy) for _ in range(3)]
        it = iter(legs)
        current = next(it)

        buf = ReceiveBuffer()
        buf.append(wire)
        assert current(buf) == content
        assert not buf
        current = next(it)
        got: object = None
        for i in range(len(wire)):
            buf.append(wire[i : i + 1])
            got = current(buf)
        assert got == content
        current = next(it)
        buf.append(wire + b"MAIL FROM:<x@y>\r\n")
        assert current(buf) == content
        assert bytes(buf.data) == b"MAIL FROM:<x@y>\r\n"


def test_data_reader_normalizes_bare_line_endings() -> None:
    buf = ReceiveBuffer()
    buf.append(b"a\nb\rc\r\n.\r\n")
    assert _whole_data(BareLineEnding.NORMALIZE)(buf) == b"a\r\nb\r\nc\r\n"


def test_data_reader_rejects_bare_lf() -> None:
    buf = ReceiveBuffer()
    buf.append(b"a\nb\r\n.\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        _whole_data(BareLineEnding.REJECT)(buf)
    assert info.value.reply is not None
    assert info.value.reply.code == 554


def test_chunk_reader_counts_octets() -> None:
    reader = ChunkReader(8, True, _scanner())
    parts: list[bytes] = []

    def read(buf: ReceiveBuffer) -> object:
        got = reader.read(buf)
        if got is None:
            return None
        parts.append(got[0])
        return b"".join(parts) if got[1] else None

    for split in (False, True):
        reader = ChunkReader(8, True, _scanner())
        parts.clear()
        buf = ReceiveBuffer()
        wire = b"ab\r\ncd\r\nQUIT\r\n"
        result: object = None
        for piece in [wire[i : i + 1] for i in range(len(wire))] if split else [wire]:
            buf.append(piece)
            if reader.remaining:
                result = read(buf)
        assert result == b"ab\r\ncd\r\n"
        assert bytes(buf.data) == b"QUIT\r\n"


def test_chunk_reader_last_chunk_ending_in_cr_is_bare() -> None:
    scanner = _scanner()
    buf = ReceiveBuffer()
    buf.append(b"ab\r")
    assert ChunkReader(3, True, scanner).read(buf) == (b"ab", True)
    assert scanner.bare


def test_chunk_reader_keeps_a_split_crlf_whole() -> None:
    scanner = _scanner()
    out = []
    for chunk, last in ((b"ab\r", False), (b"\ncd\r\n", True)):
        reader = ChunkReader(len(chunk), last, scanner)
        buf = ReceiveBuffer()
        buf.append(chunk)
        got = reader.read(buf)
        assert got is not None
        out.append(got[0])
    assert b"".join(out) == b"ab\r\ncd\r\n"
    assert scanner.reject() is None


def _bare_by_lines(seg: bytes) -> bool:
    """Reference: with every CRLF removed, no CR or LF may be left."""
    rest = seg.replace(b"\r\n", b"")
    return b"\r" in rest or b"\n" in rest


def _long_by_lines(out: bytes, line_len: int, limit: int) -> tuple[bool, int]:
    """Reference: split into lines and look at each one."""
    lines = out.split(b"\r\n")
    lines[0] = b"x" * line_len + lines[0]
    if any(len(line) > limit for line in lines[:-1]):
        return True, 0
    return len(lines[-1]) > limit, len(lines[-1])


def test_content_checks_agree_with_a_line_by_line_reading() -> None:
    # The scanner checks without a per-line loop (shifted CR/LF masks, jumps between
    # CRLFs); a plain reading line by line must give the same answers.
    rng = random.Random(2920)
    pieces = [b"a", b"\r", b"\n", b"\r\n", b"\r\n", b"bbbbb", b"\r\r\n", b"\n\r"]
    for _ in range(20000):
        seg = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 24)))
        assert has_bare_line_ending(seg) == _bare_by_lines(seg), seg
        limit = rng.randint(0, 12)
        line_len = rng.randint(0, 14)
        expected = _long_by_lines(seg, line_len, limit)
        if expected[0]:
            assert longest_line_exceeds(seg, line_len, limit)[0], (seg, line_len, limit)
        else:
            assert longest_line_exceeds(seg, line_len, limit) == expected, (seg, line_len, limit)


def test_data_reader_random_dot_lines_and_splits() -> None:
    # Content with dot-started lines, dot-stuffed on the wire, fed in random pieces: the
    # reader gives back the content exactly and leaves what follows the end marker.
    rng = random.Random(5321)
    words = [b"", b".", b"..", b".x", b"x.", b"hello", b"\xff", b"." * 3 + b"y"]
    for _ in range(2000):
        lines = [rng.choice(words) + rng.choice(words) for _ in range(rng.randint(0, 8))]
        content = b"".join(line + b"\r\n" for line in lines)
        wire = content.replace(b"\r\n.", b"\r\n..")
        if wire.startswith(b"."):
            wire = b"." + wire
        wire += b".\r\nQUIT\r\n"
        reader = DataReader(_scanner())
        buf = ReceiveBuffer()
        got: list[bytes] = []
        ended = False
        pos = 0
        while not ended:
            step = rng.randint(1, 9)
            buf.append(wire[pos : pos + step])
            pos += step
            while (res := reader.read(buf)) is not None:
                got.append(res[0])
                if res[1]:
                    ended = True
                    break
                if not buf:
                    break
            assert pos < len(wire) + 9
        assert b"".join(got) == content
        assert bytes(buf.data) + wire[pos:] == b"QUIT\r\n"
