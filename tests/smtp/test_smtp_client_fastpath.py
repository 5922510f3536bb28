"""The client engine's short paths give exactly what the general paths give.

Each test holds the general algorithm as it was before the short path existed (the oracle,
kept here verbatim or reached through the engine's general method) and compares both on
random input with Hypothesis: reply parsing (one-line fast path, remembered replies, the
batch ``read_replies``), command sending (MAIL/RCPT/DATA/RSET short way, the reverse-path
memo), and content (``inspect_body``, ``check_content`` + ``send_message``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sluice import smtp
from sluice.message.envelope import Notify
from sluice.smtp import _client, _writers
from sluice.smtp._content import (
    BodyEncoder,
    _normalize,
    check_body,
    inspect_body,
    longest_line_exceeds,
)
from sluice.smtp._grammar import GrammarError, parse_path, xtext_encode
from sluice.smtp._state import Input, is_valid, next_state
from sluice.smtp.limits import MAX_COMMAND_LINE, MAX_PARAMETER_LINE
from sluice.smtp.replies import EnhancedStatus, Reply, parse_reply

# ---------------------------------------------------------------------------------------------
# Oracles: the general algorithms as they were.

_ENHANCED_PREFIX_RE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|\Z)")
_REPLY_LINE_RE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?\Z", re.DOTALL)


def _clean(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd").replace("\r", "\ufffd")


def parse_reply_oracle(raw_lines: Sequence[bytes]) -> Reply:
    code = -1
    texts: list[str] = []
    for i, raw in enumerate(raw_lines):
        m = _REPLY_LINE_RE.match(raw)
        if m is None:
            raise smtp.RemoteProtocolError(f"malformed reply line {raw[:80]!r}")
        this = int(m[1])
        if code == -1:
            code = this
        elif this != code:
            raise smtp.RemoteProtocolError(f"reply code changed from {code} to {this} mid-reply")
        if (m[2] == b"-") != (i < len(raw_lines) - 1):
            raise smtp.RemoteProtocolError(f"reply continuation marker misplaced in {raw[:80]!r}")
        texts.append(_clean(m[3] or b""))
    if code == -1:
        raise smtp.RemoteProtocolError("empty reply")
    status = None
    m2 = _ENHANCED_PREFIX_RE.match(texts[0])
    if m2 is not None and int(m2[1]) == code // 100:
        status = EnhancedStatus(klass=int(m2[1]), subject=int(m2[2]), detail=int(m2[3]))
        texts = [
            t[mm.end() :]
            if (mm := _ENHANCED_PREFIX_RE.match(t)) and mm[0].strip() == str(status)
            else t
            for t in texts
        ]
    return Reply(code=code, lines=tuple(texts), enhanced=status)


def check_body_oracle(body: bytes) -> str | None:
    if b"\x00" in body:
        return "nul"
    canon = _normalize(body) if (b"\r" in body or b"\n" in body) else body
    if len(canon) > 998 and longest_line_exceeds(canon, 0, 998)[0]:
        return "long-line"
    return None


def _path_oracle(address: str, route: tuple[str, ...], *, utf8: bool, postmaster: bool) -> str:
    prefix = ",".join(f"@{d}" for d in route) + ":" if route else ""
    token = f"<{prefix}{address}>"
    try:
        parse_path(token, utf8=utf8, postmaster=postmaster)
    except GrammarError as exc:
        raise smtp.LocalProtocolError(f"cannot send path {token!r}: {exc}") from exc
    return token


def _notify_oracle(flags: Notify) -> str:
    if Notify.NEVER in flags:
        return "NEVER"
    pairs = (("SUCCESS", Notify.SUCCESS), ("FAILURE", Notify.FAILURE), ("DELAY", Notify.DELAY))
    return ",".join(name for name, f in pairs if f in flags)


def write_oracle(ev: smtp.Event, utf8: bool) -> bytes:
    if isinstance(ev, smtp.MailFrom):
        parts = [
            f"MAIL FROM:{_path_oracle(ev.address, ev.route, utf8=ev.smtputf8, postmaster=False)}"
        ]
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
        limit = MAX_PARAMETER_LINE
    elif isinstance(ev, smtp.RcptTo):
        parts = [f"RCPT TO:{_path_oracle(ev.address, ev.route, utf8=utf8, postmaster=True)}"]
        if ev.notify:
            parts.append(f"NOTIFY={_notify_oracle(ev.notify)}")
        if ev.orcpt is not None:
            addr_type, _, addr = ev.orcpt.partition(";")
            parts.append(f"ORCPT={addr_type};{xtext_encode(addr)}")
        limit = MAX_PARAMETER_LINE
    elif isinstance(ev, smtp.Data):
        parts, limit = ["DATA"], MAX_COMMAND_LINE
    else:
        assert isinstance(ev, smtp.Rset)
        parts, limit = ["RSET"], MAX_COMMAND_LINE
    line = " ".join(parts).encode("utf-8") + b"\r\n"
    if len(line) > limit:
        raise smtp.LocalProtocolError(f"{type(ev).__name__} line longer than the RFC 5321 limit")
    return line


def next_event_oracle(c: smtp.ClientConnection) -> smtp.Event | smtp.Signal:
    """ClientConnection.next_event as it was: the reader, the general parse, next_state."""
    if c._error is not None:
        raise c._error
    state = c._state
    if state is smtp.State.ERROR:
        raise smtp.LocalProtocolError("the connection is in state ERROR after a local error")
    if state is smtp.State.CLOSED:
        return smtp.ConnectionClosed()
    if state is smtp.State.TLS_HANDOFF:
        return smtp.PAUSED
    try:
        lines = c._reader.read(c._buf)
    except smtp.RemoteProtocolError as exc:
        raise c._fail(exc) from None
    if lines is None:
        if c._eof:
            c._state = smtp.State.CLOSED
            c._pipeline.clear()
            return smtp.ConnectionClosed()
        return smtp.NEED_DATA if c._pipeline else smtp.PAUSED
    try:
        reply = parse_reply_oracle(lines)
    except smtp.RemoteProtocolError as exc:
        raise c._fail(exc) from None
    item = c._pipeline.pop()
    code = reply.code
    if item is None:
        if code == 421:
            c._state = smtp.State.CLOSED
            return smtp.ReplyReceived(reply=reply, command=None)
        raise c._fail(smtp.RemoteProtocolError(f"unsolicited reply {code}"))
    command, event = item
    state = c._state
    if is_valid(state, command):
        try:
            new = next_state(state, command, code, strict=False)
        except smtp.LocalProtocolError:
            raise c._fail(
                smtp.RemoteProtocolError(f"{code} is not a valid reply to {command.name}")
            ) from None
    else:
        new = smtp.State.CLOSED if code == 421 else state
    if code < 400:
        c._apply(command, reply, new)
    elif command in (Input.BDAT, Input.BDAT_LAST):
        c._bdat_remaining = 0
    if new is smtp.State.CLOSED:
        c._pipeline.clear()
    c._state = new
    if not c._pipeline:
        c._send_state = new
    return smtp.ReplyReceived(reply=reply, command=event)


def outcome(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """(\"ok\", value) or (exception type, message): what a call did, for comparison."""
    try:
        return ("ok", fn(*args, **kwargs))
    except smtp.LocalProtocolError as exc:  # the writer's CommandNotWritable is one too
        return (smtp.LocalProtocolError, str(exc))
    except smtp.RemoteProtocolError as exc:
        return (type(exc), str(exc))


def same_reply(a: Reply, b: Reply) -> bool:
    return (a.code, a.lines, a.enhanced, str(a.enhanced)) == (
        b.code,
        b.lines,
        b.enhanced,
        str(b.enhanced),
    )


# ---------------------------------------------------------------------------------------------
# Strategies.

_codes = st.sampled_from([b"250", b"251", b"354", b"421", b"450", b"550", b"220", b"199", b"25"])
_status = st.one_of(
    st.sampled_from(["2.1.0", "2.1.5", "2.0.0", "4.2.1", "5.1.1", "2.01.0", "5.7.001", "9.9.9"]),
    st.builds(
        "{}.{}.{}".format,
        st.sampled_from([2, 4, 5]),
        st.integers(0, 1200),
        st.integers(0, 1200),
    ),
)
_text = st.one_of(
    st.sampled_from([b"Ok", b"", b" ", b"End data with <CR><LF>.<CR><LF>", b"queued as 4X2"]),
    st.binary(max_size=12),
)


@st.composite
def reply_lines(draw: st.DrawFn) -> bytes:
    code = draw(_codes)
    sep = draw(st.sampled_from([b" ", b"-", b"", b"x"]))
    if sep == b"":
        return code
    prefix = draw(st.one_of(st.just(b""), _status.map(str.encode)))
    spaces = draw(st.sampled_from([b" ", b"  ", b""]))
    return code + sep + prefix + spaces + draw(_text)


# ---------------------------------------------------------------------------------------------
# Replies.


@settings(max_examples=600, deadline=None)
@given(st.lists(reply_lines(), min_size=1, max_size=3))
@example([b"250 2.01.0 leading zero stays in the text"])
@example([b"250 2.1.0  two spaces"])
@example([b"550 2.1.0 class differs"])
@example([b"250-2.1.0 a", b"250 2.01.0 b"])
@example([b"250 \xff\x00\r"])
@example([b"354"])
def test_parse_reply_matches_the_general_parse(lines: list[bytes]) -> None:
    got, want = outcome(parse_reply, lines), outcome(parse_reply_oracle, lines)
    assert got[0] == want[0]
    if got[0] == "ok":
        assert same_reply(got[1], want[1])
    else:
        assert got[1] == want[1]


def _greeted(extensions: Sequence[str]) -> smtp.ClientConnection:
    c = smtp.Connection(smtp.CLIENT)
    assert isinstance(c, smtp.ClientConnection)
    c.receive_data(b"220 mx ESMTP\r\n")
    c.next_event()
    c.send(smtp.Ehlo(domain="c.test"))
    lines = ["mx", *extensions]
    wire = b"".join(
        f"250{'-' if i < len(lines) - 1 else ' '}{x}\r\n".encode() for i, x in enumerate(lines)
    )
    c.receive_data(wire)
    c.next_event()
    return c


_ENVELOPE_REPLY = st.sampled_from(
    [
        b"250 2.1.0 Ok\r\n",
        b"250 2.1.5 Ok\r\n",
        b"250 2.1.5 Ok\n",
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
        b"550 5.1.1 No such user\r\n",
        b"450-4.2.1 busy\r\n450 4.2.1 try later\r\n",
        b"421 4.3.2 bye\r\n",
        b"250 2.01.0 odd\r\n",
        b"250-a\r\n",
        b"2xx broken\r\n",
        b"250 ok\r\r\n",
        b"250 \xff\x00 bytes\r\n",
    ]
)


def _pieces_of(wire: bytes, cuts: list[int]) -> list[bytes]:
    pieces, at, k = [], 0, 0
    while at < len(wire):
        n = cuts[k % len(cuts)]
        pieces.append(wire[at : at + n])
        at, k = at + n, k + 1
    return pieces


def _compare_receive(fast: smtp.ClientConnection, slow: smtp.ClientConnection) -> None:
    """read_replies on ``fast`` against the old next_event loop on ``slow``."""
    got: list[Reply] = []
    a = outcome(fast.read_replies, got)
    want: list[Reply] = []
    while True:
        b = outcome(next_event_oracle, slow)
        if b[0] == "ok" and isinstance(b[1], smtp.ReplyReceived):
            want.append(b[1].reply)
            continue
        break
    assert len(got) == len(want)
    assert all(same_reply(x, y) for x, y in zip(got, want, strict=True))
    assert a == b
    assert (fast.state, fast._send_state, fast.in_flight, fast.can_send_content) == (
        slow.state,
        slow._send_state,
        slow.in_flight,
        slow.can_send_content,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(_ENVELOPE_REPLY, min_size=1, max_size=4), min_size=1, max_size=4),
    st.lists(st.integers(1, 40), min_size=1, max_size=8),
    st.booleans(),
)
def test_remembered_replies_and_read_replies_match_the_general_receive(
    groups: list[list[bytes]], cuts: list[int], eof: bool
) -> None:
    """Transactions answered with random (repeated) replies, cut into random pieces: the
    engine (remembering one-line replies, taking them in batches) sees the same replies,
    states and errors as the general reader and parser, reply by reply."""
    fast = _greeted(["PIPELINING", "ENHANCEDSTATUSCODES"])
    slow = _greeted(["PIPELINING", "ENHANCEDSTATUSCODES"])
    for n, group in enumerate(groups):
        if fast.state is not smtp.State.READY:
            break
        events = [smtp.MailFrom(address="a@x.test"), smtp.RcptTo(address="b@y.test"), smtp.Data()]
        assert [outcome(fast.send, ev) for ev in events] == [
            outcome(slow._send_general, ev) for ev in events
        ]
        wire = b"".join(group)
        last = eof and n == len(groups) - 1
        pieces = _pieces_of(wire[: max(0, len(wire) - 3)] if last else wire, cuts)
        for piece in [*pieces, *([b""] if last else [])]:
            if fast.state in (smtp.State.CLOSED, smtp.State.ERROR):
                break
            fast.receive_data(piece)
            slow.receive_data(piece)
            _compare_receive(fast, slow)
        if fast.state is smtp.State.DATA:
            assert fast.send_message(b"hi\r\n") == slow.send(
                smtp.DataChunk(data=b"hi\r\n")
            ) + slow.send(smtp.EndOfData())
            fast.receive_data(b"250 2.0.0 Ok: queued as X\r\n")
            slow.receive_data(b"250 2.0.0 Ok: queued as X\r\n")
            _compare_receive(fast, slow)


def test_remembered_reply_is_rechecked_against_the_scan_limit() -> None:
    """A line remembered when it came with a bare LF is one octet longer with CRLF: the scan
    limit is checked again, as the reader would."""
    limits = smtp.Limits(line_scan_limit=12288)
    c = smtp.Connection(smtp.CLIENT, limits=limits)
    assert isinstance(c, smtp.ClientConnection)
    c._scan_limit = c._reader.scan_limit = 14  # as if configured that low
    c.receive_data(b"220 mx\r\n")
    c.next_event()
    c.send(smtp.Ehlo(domain="c.test"))
    c.receive_data(b"250 mx\r\n")
    c.next_event()
    for ending, ok in ((b"\n", True), (b"\r\n", False)):
        c.send(smtp.Rset())
        c.receive_data(b"250 2.0.0 Ok.." + ending)  # the LF at 14 with a bare LF, 15 with CRLF
        if ok:
            ev = c.next_event()
            assert isinstance(ev, smtp.ReplyReceived)
            assert ev.reply.lines == ("Ok..",)
        else:
            with pytest.raises(smtp.RemoteProtocolError, match="scan limit"):
                c.next_event()


def test_a_remembered_line_that_ends_a_multiline_reply_is_not_taken_alone() -> None:
    """The reader holds the first line of a reply; the next line, although remembered as a
    reply of its own, is that reply's last line."""
    c = _greeted(["PIPELINING"])
    got: list[Reply] = []
    c.send(smtp.Rset())
    c.receive_data(b"250 2.1.5 Ok\r\n")
    c.read_replies(got)
    c.send(smtp.Rset())
    c.receive_data(b"250-first\r\n")
    assert c.read_replies(got) is smtp.NEED_DATA
    c.receive_data(b"250 2.1.5 Ok\r\n")
    assert c.read_replies(got) is smtp.PAUSED
    assert [r.lines for r in got] == [("Ok",), ("first", "2.1.5 Ok")]


def test_the_dot_reply_is_not_remembered() -> None:
    c = _greeted(["PIPELINING", "ENHANCEDSTATUSCODES"])
    for _ in range(3):
        for ev in (smtp.MailFrom(address="a@x.test"), smtp.RcptTo(address="b@y.test")):
            c.send(ev)
        c.send(smtp.Data())
        c.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n")
        got: list[Reply] = []
        assert c.read_replies(got) is smtp.PAUSED
        assert [r.code for r in got] == [250, 250, 354]
        c.send_message(b"x\r\n")
        c.receive_data(b"250 2.0.0 Ok: queued as Q\r\n")
        assert c.read_replies(got) is smtp.PAUSED
    assert sorted(c._remembered) == [b"250 2.1.0 Ok", b"250 2.1.5 Ok", b"354 go"]


# ---------------------------------------------------------------------------------------------
# Commands.

_addresses = st.one_of(
    st.sampled_from(
        [
            "a@x.test",
            "user@sink.test",
            "",
            "postmaster",
            "Postmaster",
            "a b@x.test",
            '"q b"@x.test',
            "ü@x.test",
            "a@-x.test",
            "a@[127.0.0.1]",
            "a@[IPv6:::1]",
            "x" * 65 + "@y.test",
            "a@" + "b" * 250 + ".test",
            "a..b@x.test",
        ]
    ),
    st.text(alphabet='ab.@-_+"ü', max_size=12),
)
_routes = st.sampled_from([(), ("r.test",), ("r.test", "s.test"), ("-bad",)])


@st.composite
def commands(draw: st.DrawFn) -> smtp.Event:
    kind = draw(st.sampled_from(["mail", "rcpt", "data", "rset"]))
    try:
        if kind == "mail":
            return smtp.MailFrom(
                address=draw(_addresses),
                route=draw(_routes),
                size=draw(st.none() | st.integers(0, 10**9)),
                body=draw(st.sampled_from([None, "7BIT", "8BITMIME", "BINARYMIME"])),
                smtputf8=draw(st.booleans()),
                ret=draw(st.sampled_from([None, "FULL", "HDRS"])),
                envid=draw(st.none() | st.text(alphabet="ab +=ü", max_size=8)),
                auth=draw(st.none() | st.sampled_from(["<>", "a@x.test"])),
            )
        if kind == "rcpt":
            return smtp.RcptTo(
                address=draw(_addresses) or "x@y.test",
                route=draw(_routes),
                notify=draw(st.sampled_from(list(Notify))),
                orcpt=draw(st.none() | st.sampled_from(["rfc822;b@y.test", "rfc822;ü+=@y"])),
            )
    except smtp.LocalProtocolError:
        return smtp.Rset()
    return smtp.Data() if kind == "data" else smtp.Rset()


_EXTENSION_SETS = st.lists(
    st.sampled_from(["PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "DSN", "AUTH PLAIN"]),
    unique=True,
)


@settings(max_examples=400, deadline=None)
@given(_EXTENSION_SETS, st.lists(commands(), max_size=8), st.booleans())
def test_short_send_matches_the_general_send(
    extensions: list[str], events: list[smtp.Event], answer: bool
) -> None:
    """Random MAIL/RCPT/DATA/RSET sequences (in and out of sequence, with and without
    PIPELINING, with parameters the server did or did not offer): ``send`` gives the bytes,
    the error and the state the general path gives, and those bytes are the old writer's."""
    fast = _greeted(extensions)
    slow = _greeted(extensions)
    for ev in events:
        utf8 = slow._send_utf8
        a = outcome(fast.send, ev)
        b = outcome(slow._send_general, ev)
        assert a == b
        if a[0] == "ok":
            assert a[1] == write_oracle(ev, utf8)
        assert (fast.state, fast._send_state, fast.in_flight, fast._send_utf8) == (
            slow.state,
            slow._send_state,
            slow.in_flight,
            slow._send_utf8,
        )
        if answer and a[0] == "ok" and not isinstance(ev, smtp.Data):
            for c in (fast, slow):
                c.receive_data(b"250 2.0.0 Ok\r\n")
                c.next_event()


@settings(max_examples=300, deadline=None)
@given(commands(), st.booleans())
def test_writer_matches_the_old_writer_twice(ev: smtp.Event, utf8: bool) -> None:
    """write_command (with the remembered reverse-paths, hit on the second call) writes what
    the old writer wrote, or refuses with the same error."""
    want = outcome(write_oracle, ev, utf8)
    assert outcome(_writers.write_command, ev, utf8=utf8) == want
    assert outcome(_writers.write_command, ev, utf8=utf8) == want


def test_sender_memo_is_bounded_and_keeps_only_valid_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_writers, "_SENDER_PATHS", {})
    monkeypatch.setattr(_writers, "_SENDER_PATHS_LIMIT", 3)
    for i in range(5):
        _writers.write_command(smtp.MailFrom(address=f"s{i}@x.test"))
    with pytest.raises(smtp.LocalProtocolError):
        _writers.write_command(smtp.MailFrom(address="bad address@x.test"))
    with pytest.raises(smtp.LocalProtocolError):  # refused again: never remembered
        _writers.write_command(smtp.MailFrom(address="bad address@x.test"))
    assert len(_writers._SENDER_PATHS) <= 3
    assert all(" " not in a for a, _ in _writers._SENDER_PATHS)


# ---------------------------------------------------------------------------------------------
# Content.

_pieces = st.lists(
    st.sampled_from(
        [b"\r\n", b"\r", b"\n", b".", b"..", b"x", b"\r\n.\r\n", b"\r\n.", b"\x00", b"y" * 500]
    ),
    max_size=12,
)


@settings(max_examples=500, deadline=None)
@given(_pieces)
def test_inspect_body_agrees_with_the_old_check(pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    problem, canonical = inspect_body(body)
    assert problem == check_body(body) == check_body_oracle(body)
    if problem != "nul":
        assert canonical == (_normalize(body) == body)


def _until_refused(calls: list[tuple[object, tuple[object, ...]]]) -> list[object]:
    out = []
    for fn, args in calls:
        out.append(outcome(fn, *args))
        if out[-1][0] != "ok":
            break
    return out


@settings(max_examples=500, deadline=None)
@given(_pieces, st.lists(_pieces, max_size=2))
def test_checked_content_goes_out_as_the_general_encoder_writes_it(
    pieces: list[bytes], more: list[list[bytes]]
) -> None:
    """check_content + send_message (skipping the checks for the checked body) put the same
    bytes on the wire, and refuse the same bodies, as the general encoder; so do further
    chunks sent after the checked one."""
    body = b"".join(pieces)
    c = _greeted(["PIPELINING"])
    for ev in (smtp.MailFrom(address="a@x.test"), smtp.RcptTo(address="b@y.test"), smtp.Data()):
        c.send(ev)
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    c.read_replies([])
    assert c.check_content(body) == check_body_oracle(body)
    enc = BodyEncoder()
    if not more:
        got = outcome(c.send_message, body)
        want = _until_refused([(enc.encode, (body,)), (enc.finish, ())])
        if want[-1][0] == "ok":
            assert got == ("ok", b"".join(x[1] for x in want))  # type: ignore[misc]
        else:
            assert got == want[-1]
        return
    chunks = [body, *(b"".join(p) for p in more)]
    got_all = _until_refused(
        [(c.send, (smtp.DataChunk(data=x),)) for x in chunks] + [(c.send, (smtp.EndOfData(),))]
    )
    want_all = _until_refused([(enc.encode, (x,)) for x in chunks] + [(enc.finish, ())])
    assert got_all == want_all


def test_a_checked_body_that_is_not_canonical_takes_the_general_encoder() -> None:
    c = _greeted(["PIPELINING"])
    for ev in (smtp.MailFrom(address="a@x.test"), smtp.RcptTo(address="b@y.test")):
        c.send(ev)
    c.send(smtp.Data())
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    c.read_replies([])
    body = b".a\nb\r\n.c"
    assert c.check_content(body) is None
    assert c._inspected is None
    assert c.send_message(body) == b"..a\r\nb\r\n..c\r\n.\r\n"


def test_send_message_refuses_as_the_two_sends_do() -> None:
    c = _greeted(["PIPELINING"])
    with pytest.raises(smtp.LocalProtocolError, match="no 354 yet"):
        c.send_message(b"x\r\n")
    assert c.state is smtp.State.ERROR
    with pytest.raises(smtp.LocalProtocolError, match="cannot send in state ERROR"):
        c.send_message(b"x\r\n")


def test_remembered_limit_bounds_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_client, "_REMEMBERED_LIMIT", 2)
    c = _greeted(["PIPELINING"])
    for i in range(5):
        c.send(smtp.Rset())
        c.receive_data(f"250 ok {i}\r\n".encode())
        c.read_replies([])
    assert len(c._remembered) == 2
