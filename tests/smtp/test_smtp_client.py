"""Client role, joined to a server Connection in memory (h11's ConnectionPair): EHLO and HELO
fallback, pipelined MAIL/RCPT/DATA with per-recipient replies, dot-stuffing and CRLF on the
way out (T08), reuse with RSET, QUIT, BDAT, STARTTLS reply injection, misuse."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smtp_helpers import ALL_EXTENSIONS, HOST, Transcript, default_reply, drain

from sluice import smtp
from sluice.message.envelope import Notify
from sluice.smtp import replies as R

Policy = Callable[[smtp.Event], "smtp.Reply | None"]


class Pair:
    """A client and a server Connection joined by an in-memory link."""

    def __init__(self, policy: Policy = default_reply, **server_kwargs: object) -> None:
        self.client = smtp.Connection(smtp.CLIENT)
        self.server = smtp.Connection(smtp.SERVER, **server_kwargs)  # type: ignore[arg-type]
        self.policy = policy
        self.t = Transcript()
        self.wire: list[bytes] = []  # everything the client sent
        self.client.receive_data(self.server.send(R.greeting(HOST)))

    def send(self, *events: smtp.Event) -> None:
        data = b"".join(self.client.send(e) for e in events)
        self.wire.append(data)
        self.server.receive_data(data)
        before = len(self.t.replies)
        drain(self.server, self.t, self.policy)
        self.client.receive_data(b"".join(self.t.replies[before:]))

    def replies(self) -> list[smtp.ReplyReceived]:
        out = []
        while True:
            ev = self.client.next_event()
            if isinstance(ev, smtp.Signal | smtp.ConnectionClosed):
                return out
            assert isinstance(ev, smtp.ReplyReceived)
            out.append(ev)

    def start(self) -> None:
        (greeting,) = self.replies()
        assert greeting.command is None
        assert greeting.reply.code == 220
        self.send(smtp.Ehlo(domain="client.test"))
        (ehlo,) = self.replies()
        assert ehlo.reply.code == 250


def test_pipelined_transaction_with_per_recipient_replies() -> None:
    def policy(ev: smtp.Event) -> smtp.Reply | None:
        if isinstance(ev, smtp.RcptTo) and ev.address.startswith("bad"):
            return smtp.Reply.of(550, "5.1.1", "No such user")
        if isinstance(ev, smtp.RcptTo) and ev.address.startswith("later"):
            return smtp.Reply.of(450, "4.2.1", "Try later")
        return default_reply(ev)

    p = Pair(policy)
    p.start()
    assert "PIPELINING" in p.client.extensions
    rcpts = [smtp.RcptTo(address=a) for a in ("good@y.test", "bad@y.test", "later@y.test")]
    p.send(smtp.MailFrom(address="a@x.test", size=10), *rcpts, smtp.Data())
    assert len(p.wire[-1].split(b"\r\n")) == 6  # one write: MAIL, 3 RCPT, DATA
    got = p.replies()
    assert [(type(r.command).__name__, r.reply.code) for r in got] == [
        ("MailFrom", 250),
        ("RcptTo", 250),
        ("RcptTo", 550),
        ("RcptTo", 450),
        ("Data", 354),
    ]
    assert [r.command for r in got[1:4]] == rcpts
    assert str(got[2].reply.enhanced) == "5.1.1"
    assert p.client.can_send_content
    p.send(smtp.DataChunk(data=b"Subject: hi\r\n\r\n.dot line\nbare\rcr\r\n"), smtp.EndOfData())
    (final,) = p.replies()
    assert final.reply.code == 250
    assert isinstance(final.command, smtp.EndOfData)
    assert p.t.messages == [b"Subject: hi\r\n\r\n.dot line\r\nbare\r\ncr\r\n"]
    # Reuse: a second message on the same connection, then QUIT.
    p.send(smtp.Rset())
    assert [r.reply.code for r in p.replies()] == [250]
    p.send(smtp.MailFrom(address=""), smtp.RcptTo(address="good@y.test"), smtp.Data())
    assert [r.reply.code for r in p.replies()] == [250, 250, 354]
    p.send(smtp.DataChunk(data=b"no final newline"), smtp.EndOfData())
    assert [r.reply.code for r in p.replies()] == [250]
    assert p.t.messages[1] == b"no final newline\r\n"
    p.send(smtp.Quit())
    assert [r.reply.code for r in p.replies()] == [221]
    assert p.client.state is smtp.State.CLOSED
    assert p.server.state is smtp.State.CLOSED


def test_helo_fallback_when_ehlo_is_refused() -> None:
    def policy(ev: smtp.Event) -> smtp.Reply | None:
        if isinstance(ev, smtp.Ehlo):
            return R.COMMAND_UNRECOGNIZED
        return default_reply(ev)

    p = Pair(policy)
    p.replies()
    p.send(smtp.Ehlo(domain="c.test"))
    (r,) = p.replies()
    assert r.reply.code == 500
    assert p.client.state is smtp.State.GREETED
    p.send(smtp.Helo(domain="c.test"))
    assert [x.reply.code for x in p.replies()] == [250]
    assert p.client.extensions == {}
    # Without PIPELINING the client refuses to pipeline, and extensions' parameters.
    p.client.send(smtp.MailFrom(address="a@x.test"))
    with pytest.raises(smtp.LocalProtocolError, match="PIPELINING"):
        p.client.send(smtp.RcptTo(address="b@y.test"))


def test_client_refuses_unadvertised_parameters() -> None:
    p = Pair(lambda ev: default_reply(ev, ("PIPELINING",)))
    p.start()
    with pytest.raises(smtp.LocalProtocolError, match="SIZE"):
        p.client.send(smtp.MailFrom(address="a@x.test", size=5))


def test_client_sequence_is_checked() -> None:
    client = smtp.Connection(smtp.CLIENT)
    with pytest.raises(smtp.LocalProtocolError):
        client.send(smtp.Ehlo(domain="c.test"))  # before the greeting
    p = Pair()
    p.start()
    with pytest.raises(smtp.LocalProtocolError):
        p.client.send(smtp.RcptTo(address="b@y.test"))  # before MAIL
    p = Pair()
    p.start()
    with pytest.raises(smtp.LocalProtocolError):
        p.client.send(smtp.DataChunk(data=b"x"))  # before 354
    p = Pair()
    p.start()
    p.client.send(smtp.MailFrom(address="a@x.test"))
    p.client.send(smtp.RcptTo(address="b@y.test"))
    p.client.send(smtp.Data())
    with pytest.raises(smtp.LocalProtocolError, match="DATA"):
        p.client.send(smtp.Rset())  # DATA ends a pipelined group


def test_client_never_sends_nul_or_long_lines() -> None:
    for body, why in ((b"a\x00b\r\n", "nul"), (b"x" * 999 + b"\r\n", "long-line")):
        assert smtp.check_body(body) == why
        p = Pair()
        p.start()
        p.send(smtp.MailFrom(address="a@x.test"), smtp.RcptTo(address="b@y.test"), smtp.Data())
        p.replies()
        with pytest.raises(smtp.LocalProtocolError):
            p.client.send(smtp.DataChunk(data=body))
        assert p.client.state is smtp.State.ERROR
    assert smtp.check_body(b"x" * 998 + b"\r\n") is None


def test_path_grammar_is_shared() -> None:
    p = Pair()
    p.start()
    with pytest.raises(smtp.LocalProtocolError):
        p.client.send(smtp.MailFrom(address="not an address"))
    with pytest.raises(smtp.LocalProtocolError):
        smtp.RcptTo(address="a@b\r\nRSET")


def test_dsn_parameters_round_trip() -> None:
    p = Pair()
    p.start()
    mail = smtp.MailFrom(
        address="a@x.test", ret="HDRS", envid="id with space+plus", body="8BITMIME"
    )
    rcpt = smtp.RcptTo(
        address="b@y.test", notify=Notify.FAILURE | Notify.DELAY, orcpt="rfc822;b=@y.test"
    )
    p.send(mail, rcpt)
    assert b"ENVID=id+20with+20space+2Bplus" in p.wire[-1]
    assert p.t.events[-2:] == [mail, rcpt]


def test_bdat_from_the_client() -> None:
    p = Pair()
    p.start()
    p.send(smtp.MailFrom(address="a@x.test"), smtp.RcptTo(address="b@y.test"))
    p.replies()
    p.send(
        smtp.Bdat(size=4),
        smtp.DataChunk(data=b"ab\r\n"),
        smtp.Bdat(size=4, last=True),
        smtp.DataChunk(data=b"cd\r\n"),
    )
    assert [r.reply.code for r in p.replies()] == [250, 250]
    assert p.t.messages == [b"ab\r\ncd\r\n"]
    p.send(smtp.MailFrom(address="a@x.test"), smtp.RcptTo(address="b@y.test"))
    p.replies()
    p.client.send(smtp.Bdat(size=3, last=True))
    with pytest.raises(smtp.LocalProtocolError):
        p.client.send(smtp.DataChunk(data=b"a\nb"))


def test_starttls_reply_injection_is_left_behind() -> None:
    client = smtp.Connection(smtp.CLIENT)
    client.receive_data(b"220 mx ESMTP\r\n")
    client.next_event()
    client.send(smtp.Ehlo(domain="c.test"))
    client.receive_data(b"250-mx\r\n250 STARTTLS\r\n")
    client.next_event()
    client.send(smtp.StartTls())
    client.receive_data(b"220 go\r\n250 injected\r\n")
    ev = client.next_event()
    assert isinstance(ev, smtp.ReplyReceived)
    assert ev.reply.code == 220
    assert client.state is smtp.State.TLS_HANDOFF
    assert client.next_event() is smtp.PAUSED
    assert client.trailing_data == (b"250 injected\r\n", False)
    fresh = smtp.Connection(smtp.CLIENT, after_starttls=True)
    assert fresh.extensions == {}
    fresh.send(smtp.Ehlo(domain="c.test"))


def test_unsolicited_421_and_garbage() -> None:
    client = smtp.Connection(smtp.CLIENT)
    client.receive_data(b"220 mx\r\n421 4.3.2 going away\r\n")
    client.next_event()
    ev = client.next_event()
    assert isinstance(ev, smtp.ReplyReceived)
    assert ev.command is None
    assert client.state is smtp.State.CLOSED
    client = smtp.Connection(smtp.CLIENT)
    client.receive_data(b"220 mx\r\n250 surprise\r\n")
    client.next_event()
    with pytest.raises(smtp.RemoteProtocolError):
        client.next_event()
    client = smtp.Connection(smtp.CLIENT)
    client.receive_data(b"HTTP/1.1 400 Bad\r\n")
    with pytest.raises(smtp.RemoteProtocolError):
        client.next_event()


def test_server_closes_mid_pipeline() -> None:
    client = smtp.Connection(smtp.CLIENT)
    client.receive_data(b"220 mx\r\n")
    client.next_event()
    client.receive_data(b"")
    assert client.next_event() == smtp.ConnectionClosed()
    assert client.state is smtp.State.CLOSED


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"x", b"\r\n.\r\n", b"\r\n.", b"yz"]),
        max_size=30,
    )
)
def test_any_body_arrives_canonical_and_whole(pieces: list[bytes]) -> None:
    """T08: whatever the caller hands in, the wire carries canonical CRLF with dot-stuffing,
    the server sees exactly one message, and it equals the normalised body."""
    body = b"".join(pieces)
    p = Pair()
    p.start()
    p.send(smtp.MailFrom(address="a@x.test"), smtp.RcptTo(address="b@y.test"), smtp.Data())
    p.replies()
    p.send(*(smtp.DataChunk(data=piece) for piece in pieces), smtp.EndOfData())
    (final,) = p.replies()
    assert final.reply.code == 250
    wire = p.wire[-1]
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")
    canon = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if canon and not canon.endswith(b"\r\n"):
        canon += b"\r\n"
    assert p.t.messages == [canon]
    assert len(p.t.ends) == 1


def test_extensions_parsed_from_ehlo() -> None:
    p = Pair()
    p.start()
    assert p.client.extensions["SIZE"] == "10240000"
    assert set(p.client.extensions) == {e.split()[0] for e in ALL_EXTENSIONS}
