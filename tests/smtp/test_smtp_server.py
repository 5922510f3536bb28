"""Server role: commands, limits (test plan A5–A7, A12, T10–T13, T17, T18), sequence,
extensions, BDAT, STARTTLS hand-off (A10), the early talker, misuse by the caller."""

from __future__ import annotations

import pytest
from smtp_helpers import Transcript, bad_replies, feed, in_data, new_server

from sluice import smtp
from sluice.message.envelope import Notify
from sluice.smtp import replies as R


def _one_bad(data: bytes, **kwargs: object) -> smtp.Reply:
    conn = new_server(**kwargs)
    t = feed(conn, data)
    (reply,) = bad_replies(t)
    return reply


def _code(reply: smtp.Reply) -> str:
    return f"{reply.code} {reply.enhanced}"


def test_full_transaction_and_reuse() -> None:
    conn = new_server()
    t = Transcript()
    for n in range(3):
        feed(
            conn, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n", t
        )
        feed(conn, f"Subject: {n}\r\n\r\nhello\r\n.\r\n".encode(), t)
    feed(conn, b"QUIT\r\n", t)
    assert [m.split(b"\r\n")[0] for m in t.messages] == [
        b"Subject: 0",
        b"Subject: 1",
        b"Subject: 2",
    ]
    assert t.codes[-1] == 221
    assert conn.state is smtp.State.CLOSED
    assert conn.next_event() == smtp.ConnectionClosed()


def test_events_carry_parameters() -> None:
    conn = new_server()
    t = feed(
        conn,
        b"MAIL FROM:<a@x.test> SIZE=123 BODY=8BITMIME RET=HDRS ENVID=job+2B1\r\n"
        b"RCPT TO:<b@y.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2By@y.test\r\n"
        b"RCPT TO:<@relay.test,@r2.test:c@y.test> NOTIFY=NEVER\r\n"
        b"RCPT TO:<Postmaster>\r\n",
    )
    mail, r1, r2, r3 = t.events
    assert mail == smtp.MailFrom(
        address="a@x.test", size=123, body="8BITMIME", ret="HDRS", envid="job+1"
    )
    assert r1 == smtp.RcptTo(
        address="b@y.test", notify=Notify.SUCCESS | Notify.DELAY, orcpt="rfc822;b+y@y.test"
    )
    assert r2 == smtp.RcptTo(
        address="c@y.test", route=("relay.test", "r2.test"), notify=Notify.NEVER
    )
    assert r3 == smtp.RcptTo(address="Postmaster")
    assert isinstance(mail, smtp.MailFrom)
    assert mail.domain == "x.test"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # RFC 5321 §4.5.3.1.4: 512 octets including CRLF → 513 is too long
        (b"NOOP " + b"x" * 506, "500 5.5.2"),
        # §4.5.3.1.3: 300-octet path
        (b"RCPT TO:<" + b"a" * 60 + b"@" + b"b" * 230 + b".test>", "501 5.1.3"),
        # §4.5.3.1.1: 65-octet local part
        (b"RCPT TO:<" + b"a" * 65 + b"@y.test>", "553 5.1.3"),
        (b"RCPT TO:<a@-bad.test>", "501 5.1.3"),
        (b"RCPT TO:<v@ext.test.>", "501 5.1.3"),
        (b"RCPT TO:<>", "501 5.1.3"),
        (b"RCPT TO:<\xc3\xbc@y.test>", "553 5.6.7"),  # no SMTPUTF8 on the MAIL
        (b"RCPT TO:<a@y.test> FOO=1", "555 5.5.4"),
        (b"RCPT TO:<a@y.test> NOTIFY=NEVER,SUCCESS", "501 5.5.4"),
        (b"RCPT TO:<a@y.test> NOTIFY=SUCCESS NOTIFY=DELAY", "501 5.5.4"),
        (b"RCPT TO:<a@y.test> ORCPT=rfc822;bad+zz", "501 5.5.4"),
        (b"RCPT TO:a@y.test", "501 5.1.3"),
        (b"RCPT FROM:<a@y.test>", "501 5.5.4"),
        (b"RSET now", "501 5.5.4"),
        (b"DATA", "503 5.5.1"),
        (b"NOOP \x00", "500 5.5.2"),
        (b"NOOP \xff\xfe", "501 5.5.2"),
        (b"EXPN list", "502 5.5.1"),
        (b"FROB", "500 5.5.1"),
        (b"MAIL FROM:<a@x.test>", "503 5.5.1"),  # nested MAIL
    ],
    ids=repr,
)
def test_refusals_in_a_transaction(line: bytes, expected: str) -> None:
    conn = new_server()
    t = feed(conn, b"MAIL FROM:<a@x.test>\r\n")
    assert t.codes == [250]
    t = feed(conn, line + b"\r\n")
    (reply,) = bad_replies(t)
    assert _code(reply) == expected
    # Recoverable: the session goes on.
    assert conn.state is smtp.State.MAIL
    assert feed(conn, b"RCPT TO:<ok@y.test>\r\n").codes == [250]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"RCPT TO:<b@y.test>", "503 5.5.1"),
        (b"DATA", "503 5.5.1"),
        (b"MAIL FROM:<\xc3\xbc@x.test>", "553 5.6.7"),
        (b"MAIL FROM:<\xc3@x.test> SMTPUTF8", "501 5.5.2"),
        (b"MAIL FROM:<a@x.test> SIZE=10240001", "552 5.3.4"),
        (b"MAIL FROM:<a@x.test> SIZE=big", "501 5.5.4"),
        (b"MAIL FROM:<a@x.test> BODY=9BIT", "501 5.5.4"),
        (b"MAIL FROM:<a@x.test> SMTPUTF8=yes", "501 5.5.4"),
        (b"MAIL FROM:<a@x.test> RET=ALL", "501 5.5.4"),
        (b"MAIL FROM:<a@x.test> ENVID=" + b"x" * 101, "501 5.5.4"),
        (b"MAIL FROM:<a b@x.test>", "501 5.1.7"),
        (b"MAIL FROM:<" + b"a" * 65 + b"@x.test>", "553 5.1.7"),
        (b"MAIL FROM:<" + b"a" * 64 + b"@" + b"b" * 250 + b".test>", "501 5.1.7"),
        (b"MAIL FROM:<a@[300.1.1.1]>", "501 5.1.7"),
        (b"MAIL FROM:<a@[IPv6:zz::1]>", "501 5.1.7"),
        (b"STARTTLS now", "501 5.5.4"),
        (b"VRFY", "501 5.5.4"),
        (b"EHLO", "501 5.5.4"),
        (b"AUTH", "501 5.5.4"),
    ],
    ids=repr,
)
def test_refusals_when_ready(line: bytes, expected: str) -> None:
    assert _code(_one_bad(line + b"\r\n")) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<>",
        b"MAIL FROM: <a@x.test>",
        b"MAIL FROM:<a@[127.0.0.1]>",
        b"MAIL FROM:<a@[IPv6:::1]>",
        b'MAIL FROM:<"a b>c"@x.test>',
        b"MAIL FROM:<\xc3\xbc@b\xc3\xbccher.test> SMTPUTF8",
        b"mail from:<a@x.test> size=10",
    ],
    ids=repr,
)
def test_accepted_senders(line: bytes) -> None:
    conn = new_server()
    t = feed(conn, line + b"\r\n")
    assert t.codes == [250], t.events
    (mail,) = t.events
    assert isinstance(mail, smtp.MailFrom)


def test_smtputf8_transaction_allows_utf8_recipients() -> None:
    conn = new_server()
    t = feed(conn, "MAIL FROM:<ü@x.test> SMTPUTF8\r\nRCPT TO:<δ@ü.test>\r\n".encode())
    assert t.codes == [250, 250]
    assert t.events[1] == smtp.RcptTo(address="δ@ü.test")


def test_parameters_need_their_extension() -> None:
    conn = new_server(extensions=("PIPELINING",))
    for line in (
        b"MAIL FROM:<a@x.test> SIZE=1",
        b"MAIL FROM:<a@x.test> BODY=8BITMIME",
        b"MAIL FROM:<a@x.test> SMTPUTF8",
    ):
        (reply,) = bad_replies(feed(conn, line + b"\r\n"))
        assert _code(reply) == "555 5.5.4"
    assert _code(bad_replies(feed(conn, b"BDAT 3 LAST\r\nabc"))[0]) == "502 5.5.1"
    assert _code(bad_replies(feed(conn, b"STARTTLS\r\n"))[0]) == "502 5.5.1"
    assert conn.state is smtp.State.READY


def test_helo_session_takes_no_parameters() -> None:
    conn = new_server(ehlo=False)
    t = feed(conn, b"HELO client.test\r\n")
    feed(conn, b"MAIL FROM:<a@x.test> SIZE=1\r\n", t)
    assert t.codes == [250, 555]
    assert conn.extensions == {}


def test_before_ehlo() -> None:
    conn = new_server(ehlo=False)
    t = feed(conn, b"MAIL FROM:<a@x.test>\r\n")
    assert _code(bad_replies(t)[0]) == "503 5.5.1"
    assert bad_replies(t)[0] is R.NEED_EHLO


def test_recipient_limit_gives_452_for_the_excess() -> None:
    conn = new_server(limits=smtp.Limits(max_recipients=3))
    wire = b"MAIL FROM:<a@x.test>\r\n" + b"".join(b"RCPT TO:<r%d@y.test>\r\n" % i for i in range(5))
    t = feed(conn, wire)
    assert t.codes == [250, 250, 250, 250, 452, 452]
    assert str(bad_replies(t)[0].enhanced) == "4.5.3"
    # Refused recipients do not count: the limit is on accepted ones. After RSET it resets.
    t = feed(conn, b"RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<z@y.test>\r\n")
    assert t.codes == [250, 250, 250]


def test_ten_thousand_recipients_in_one_segment() -> None:
    """Test plan T13: one reply per command, in order, bounded by the limit."""
    conn = new_server(limits=smtp.Limits(max_recipients=100))
    wire = b"MAIL FROM:<a@x.test>\r\n" + b"RCPT TO:<r@y.test>\r\n" * 10_000
    t = feed(conn, wire)
    assert len(t.replies) == 10_001
    assert t.codes.count(250) == 101
    assert t.codes.count(452) == 9_900
    assert conn.buffered_bytes == 0


def test_message_size_limit_stops_buffering() -> None:
    conn = in_data(limits=smtp.Limits(max_message_size=1000))
    t = Transcript()
    kept = 0
    for _ in range(200):
        feed(conn, b"x" * 98 + b"\r\n", t)
        kept = sum(len(e.data) for e in t.of(smtp.DataChunk) if isinstance(e, smtp.DataChunk))
        assert conn.buffered_bytes <= 2
    feed(conn, b".\r\n", t)
    assert kept <= 1000
    (end,) = t.ends
    assert end.reject is R.MESSAGE_TOO_BIG
    assert end.size == 200 * 100
    assert t.codes[-1] == 552
    assert conn.state is smtp.State.READY


def test_nul_and_long_lines_in_data() -> None:
    conn = in_data()
    t = feed(conn, b"a\x00b\r\n.\r\n")
    assert t.ends[0].reject is R.NUL_IN_DATA
    assert t.messages == []
    conn = in_data()
    t = feed(conn, b"x" * 999 + b"\r\n.\r\n")
    assert t.ends[0].reject is R.LONG_LINE_IN_DATA
    conn = in_data()
    t = feed(conn, b"x" * 998 + b"\r\n.\r\n")  # exactly the limit
    assert t.ends[0].reject is None
    conn = in_data()
    t = feed(conn, b"." + b"x" * 998 + b"\r\n.\r\n")  # the transparency dot does not count
    assert t.ends[0].reject is None
    conn = in_data(long_lines=smtp.LongLinePolicy.ACCEPT)
    t = feed(conn, b"short\r\n" + b"y" * 5000 + b"\r\nend\r\n.\r\n")
    assert t.ends[0].reject is None
    assert t.ends[0].long_lines
    assert t.messages == [b"short\r\n" + b"y" * 5000 + b"\r\nend\r\n"]


def test_long_line_split_across_reads_is_seen() -> None:
    conn = in_data()
    t = Transcript()
    for _ in range(10):
        feed(conn, b"z" * 100, t)
    feed(conn, b"\r\n.\r\n", t)
    assert t.ends[0].reject is R.LONG_LINE_IN_DATA


def test_command_line_flood_is_fatal_and_bounded() -> None:
    conn = new_server()
    for _ in range(16):
        conn.receive_data(b"A" * 1024)
        assert conn.next_event() is smtp.NEED_DATA
        assert conn.buffered_bytes <= conn.limits.line_scan_limit
    conn.receive_data(b"A")
    with pytest.raises(smtp.RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.reply is R.LINE_FLOOD
    assert conn.state is smtp.State.ERROR
    with pytest.raises(smtp.RemoteProtocolError):
        conn.next_event()


def test_bare_lf_command_line() -> None:
    reply = _one_bad(b"NOOP\n")
    assert reply is R.BARE_LINE_ENDING_IN_COMMAND
    conn = new_server(bare_line_ending=smtp.BareLineEnding.NORMALIZE)
    assert feed(conn, b"NOOP\n").codes == [250]
    assert _one_bad(b"NOOP a\rb\r\n") is R.BARE_LINE_ENDING_IN_COMMAND


def test_early_talker() -> None:
    conn = smtp.Connection(smtp.SERVER)
    conn.receive_data(b"EHLO early.test\r\n")
    conn.send(R.greeting("mx.test"))
    with pytest.raises(smtp.RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.reply is R.SYNCHRONIZATION_ERROR


def test_pipelining_after_ehlo_is_refused() -> None:
    conn = new_server(ehlo=False)
    with pytest.raises(smtp.RemoteProtocolError):
        feed(conn, b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\n")


def test_pipelining_without_the_extension_is_refused() -> None:
    conn = new_server(extensions=("8BITMIME",))
    with pytest.raises(smtp.RemoteProtocolError):
        feed(conn, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
    relaxed = new_server(extensions=("8BITMIME",), forbid_unauth_pipelining=False)
    assert feed(relaxed, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n").codes == [250, 250]


def test_quit_pipelined_after_the_dot() -> None:
    conn = in_data()
    t = feed(conn, b"hi\r\n.\r\nQUIT\r\n")
    assert t.codes == [250, 221]


def test_bdat() -> None:
    conn = new_server()
    t = feed(
        conn, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 5\r\nab\r\ncBDAT 3 LAST\r\nd\r\n"
    )
    assert t.codes == [250, 250, 250, 250]
    assert t.messages == [b"ab\r\ncd\r\n"]
    assert [type(e).__name__ for e in t.events] == [
        "MailFrom",
        "RcptTo",
        "Bdat",
        "DataChunk",
        "EndOfChunk",
        "Bdat",
        "DataChunk",
        "EndOfData",
    ]
    # BDAT out of sequence: the chunk is still consumed, then 503.
    t = feed(conn, b"BDAT 4 LAST\r\nQUIT")
    assert _code(bad_replies(t)[0]) == "503 5.5.1"
    assert conn.buffered_bytes == 0
    # DATA after BDAT in one transaction is out of sequence
    t = feed(conn, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 1\r\nxDATA\r\n")
    assert t.codes == [250, 250, 250, 503]
    assert _code(bad_replies(feed(conn, b"BDAT x\r\n"))[0]) == "501 5.5.4"


def test_bdat_size_limit() -> None:
    conn = new_server(limits=smtp.Limits(max_message_size=10))
    t = feed(
        conn,
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 8\r\n12345678BDAT 8 LAST\r\n12345678",
    )
    assert t.codes == [250, 250, 250, 552]
    assert conn.state is smtp.State.READY


def test_starttls_hands_off_and_exposes_injected_plaintext() -> None:
    """Test plan A10/T14: bytes pipelined after STARTTLS are never acted on."""
    conn = new_server()
    t = feed(conn, b"STARTTLS\r\nRSET\r\n")
    assert t.codes == [220]
    assert conn.state is smtp.State.TLS_HANDOFF
    assert conn.next_event() is smtp.PAUSED
    assert conn.trailing_data == (b"RSET\r\n", False)
    # After the handshake: a fresh Connection; no greeting; MAIL before EHLO is 503.
    tls = smtp.Connection(smtp.SERVER, after_starttls=True)
    assert tls.state is smtp.State.GREETED
    t = feed(tls, b"MAIL FROM:<a@x.test>\r\n")
    assert _code(bad_replies(t)[0]) == "503 5.5.1"


def test_auth_exchange() -> None:
    conn = new_server()

    def policy(ev: smtp.Event) -> smtp.Reply | None:
        if isinstance(ev, smtp.Auth):
            return smtp.Reply(code=334, lines=("",))
        if isinstance(ev, smtp.AuthResponse):
            return smtp.Reply.of(235, "2.7.0", "OK")
        return None

    t = feed(conn, b"AUTH PLAIN\r\n", policy=policy)
    assert conn.state is smtp.State.AUTH
    t = feed(conn, b"AGFAYg==\r\n", t, policy=policy)
    assert t.events == [smtp.Auth(mechanism="PLAIN"), smtp.AuthResponse(data="AGFAYg==")]
    assert conn.state is smtp.State.READY


def test_vrfy_help_noop_rset() -> None:
    conn = new_server()
    t = Transcript()
    for line in (b"VRFY someone\r\n", b"HELP\r\n", b"NOOP hi\r\n", b"RSET\r\n"):
        feed(conn, line, t)
    assert t.codes == [252, 214, 250, 250]
    # VRFY, HELP and NOOP end a pipelined group (RFC 2920 §3.1)
    with pytest.raises(smtp.RemoteProtocolError):
        feed(conn, b"NOOP\r\nRSET\r\n")


def test_greeting_554_allows_only_quit() -> None:
    conn = smtp.Connection(smtp.SERVER)
    conn.send(smtp.Reply.of(554, "5.7.1", "No service"))
    assert conn.state is smtp.State.REFUSED
    t = feed(conn, b"EHLO c.test\r\n")
    assert bad_replies(t)[0] is R.ONLY_QUIT
    assert feed(conn, b"QUIT\r\n").codes == [221]


def test_421_closes() -> None:
    conn = new_server()
    conn.receive_data(b"MAIL FROM:<a@x.test>\r\n")
    assert isinstance(conn.next_event(), smtp.MailFrom)
    conn.send(R.SHUTTING_DOWN)
    assert conn.state is smtp.State.CLOSED


def test_eof_mid_command_and_mid_data() -> None:
    conn = new_server()
    t = feed(conn, b"MAIL FROM:<a@x", eof=True)
    assert t.events == [smtp.ConnectionClosed()]
    conn = in_data()
    t = feed(conn, b"half a message\r\n", eof=True)
    assert t.ends == []
    assert isinstance(t.events[-1], smtp.ConnectionClosed)


@pytest.mark.parametrize(
    "reply",
    [
        R.OK,
        R.START_MAIL_INPUT,
        smtp.Reply(code=220, lines=("x",)),
        smtp.Reply(code=221, lines=("x",)),
    ],
)
def test_caller_misuse_raises_local_error(reply: smtp.Reply) -> None:
    conn = new_server()
    conn.receive_data(b"RCPT TO:<b@y.test>\r\n")
    ev = conn.next_event()
    assert isinstance(ev, smtp.BadCommand)
    with pytest.raises(smtp.LocalProtocolError):
        conn.send(reply)  # a refused command needs a 4xx/5xx
    assert conn.state is smtp.State.ERROR
    with pytest.raises(smtp.LocalProtocolError):
        conn.next_event()


def test_reply_without_a_command_is_misuse() -> None:
    conn = new_server()
    with pytest.raises(smtp.LocalProtocolError):
        conn.send(R.OK)
    conn = new_server()
    conn.receive_data(b"MAIL FROM:<a@x.test>\r\n")
    conn.next_event()
    with pytest.raises(smtp.LocalProtocolError):
        conn.send(R.START_MAIL_INPUT)  # 354 is not an answer to MAIL
    with pytest.raises(smtp.LocalProtocolError):
        new_server().send(smtp.Quit())


def test_reply_validation() -> None:
    with pytest.raises(smtp.LocalProtocolError):
        smtp.Reply(code=250, lines=("a\r\nRSET",))
    with pytest.raises(smtp.LocalProtocolError):
        smtp.Reply.of(250, "5.1.1", "class mismatch")
    with pytest.raises(smtp.LocalProtocolError):
        smtp.Reply(code=250, lines=("x" * 600,)).to_bytes()
    assert R.TOO_MANY_RECIPIENTS.is_transient
    assert R.MESSAGE_TOO_BIG.is_permanent
    assert R.ehlo_reply("mx", ["A"]).to_bytes() == b"250-mx\r\n250 A\r\n"
