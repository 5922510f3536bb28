"""Client role: the next transaction pipelined behind the final dot (RFC 2920 §3.1), joined
to a server Connection in memory. MAIL after EndOfData while the dot's reply is outstanding
(with PIPELINING only), replies matched in order, a 421 to the dot, misuse refused,
``send_group`` taking a group back whole, ``send_message_parts`` handing the body back."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smtp_helpers import ALL_EXTENSIONS, HOST, Transcript, default_reply, drain

from sluice import smtp
from sluice.smtp import replies as R

Policy = Callable[[smtp.Event], "smtp.Reply | None"]
NO_PIPELINING = tuple(e for e in ALL_EXTENSIONS if e != "PIPELINING")


class Link:
    """A greeted client and server joined in memory; ``write`` carries one client write."""

    def __init__(
        self, policy: Policy = default_reply, extensions: Sequence[str] = ALL_EXTENSIONS
    ) -> None:
        def answer(ev: smtp.Event) -> smtp.Reply | None:
            if isinstance(ev, smtp.Ehlo):
                return R.ehlo_reply(HOST, list(extensions))
            return policy(ev)

        c = smtp.Connection(smtp.CLIENT)
        assert isinstance(c, smtp.ClientConnection)
        self.client = c
        self.server = smtp.Connection(smtp.SERVER)
        self.t = Transcript()
        self.answer = answer
        c.receive_data(self.server.send(R.greeting(HOST)))
        assert [r.reply.code for r in self.replies()] == [220]
        self.write(c.send(smtp.Ehlo(domain="client.test")))
        assert [r.reply.code for r in self.replies()] == [250]

    def write(self, data: bytes) -> None:
        self.server.receive_data(data)
        before = len(self.t.replies)
        drain(self.server, self.t, self.answer)
        self.client.receive_data(b"".join(self.t.replies[before:]))

    def replies(self) -> list[smtp.ReplyReceived]:
        out = []
        while True:
            ev = self.client.next_event()
            if not isinstance(ev, smtp.ReplyReceived):
                return out
            out.append(ev)


def envelope(sender: str = "a@x.test", *rcpts: str) -> list[smtp.Event]:
    return [
        smtp.MailFrom(address=sender),
        *(smtp.RcptTo(address=r) for r in rcpts or ("b@y.test",)),
        smtp.Data(),
    ]


def group(c: smtp.ClientConnection, events: Sequence[smtp.Event]) -> bytes:
    out: list[bytes] = []
    c.send_group(events, out)
    return b"".join(out)


def test_next_transaction_rides_behind_the_dot() -> None:
    link = Link()
    c = link.client
    link.write(group(c, envelope()))
    assert [r.reply.code for r in link.replies()] == [250, 250, 354]
    content, end = c.send_message_parts(b"one\r\n")
    assert c.state is smtp.State.DATA  # the dot's reply is outstanding
    nxt = group(c, envelope("c@x.test", "d@y.test", "e@y.test"))
    assert nxt == b"MAIL FROM:<c@x.test>\r\nRCPT TO:<d@y.test>\r\nRCPT TO:<e@y.test>\r\nDATA\r\n"
    assert c.in_flight == (
        smtp.Input.END_OF_DATA,
        smtp.Input.MAIL,
        smtp.Input.RCPT,
        smtp.Input.RCPT,
        smtp.Input.DATA,
    )
    assert not c.can_send_content  # until the next 354
    link.write(content + end + nxt)
    got = link.replies()
    assert [(type(r.command).__name__, r.reply.code) for r in got] == [
        ("EndOfData", 250),
        ("MailFrom", 250),
        ("RcptTo", 250),
        ("RcptTo", 250),
        ("Data", 354),
    ]
    assert c.state is smtp.State.DATA
    assert c.can_send_content
    link.write(c.send_message(b"two\r\n") + c.send(smtp.Quit()))
    assert [r.reply.code for r in link.replies()] == [250, 221]
    assert link.t.messages == [b"one\r\n", b"two\r\n"]
    assert c.state is smtp.State.CLOSED


def test_a_refused_dot_does_not_touch_the_replies_behind_it_and_rset_may_ride_too() -> None:
    def policy(ev: smtp.Event) -> smtp.Reply | None:
        if isinstance(ev, smtp.EndOfData) and ev.reject is None:
            return smtp.Reply.of(554, "5.7.1", "spam")
        if isinstance(ev, smtp.RcptTo) and ev.address.startswith("bad"):
            return smtp.Reply.of(550, "5.1.1", "no")
        return default_reply(ev)

    link = Link(policy)
    c = link.client
    link.write(group(c, envelope()))
    link.replies()
    wire = c.send_message(b"x\r\n") + group(c, envelope("a@x.test", "bad@y.test"))
    link.write(wire)
    assert [r.reply.code for r in link.replies()] == [554, 250, 550, 503]
    assert c.state is smtp.State.MAIL  # abandoned transaction: RSET before the next MAIL
    link.write(group(c, [smtp.Rset(), *envelope()]))
    assert [r.reply.code for r in link.replies()] == [250, 250, 250, 354]
    # RSET may also open the group behind a dot.
    wire = c.send_message(b"y\r\n") + group(c, [smtp.Rset(), *envelope()])
    link.write(wire)
    assert [r.reply.code for r in link.replies()] == [554, 250, 250, 250, 354]


def test_421_to_the_dot_closes_and_nothing_behind_it_is_matched() -> None:
    def policy(ev: smtp.Event) -> smtp.Reply | None:
        if isinstance(ev, smtp.EndOfData):
            return smtp.Reply.of(421, "4.3.2", "going down")
        return default_reply(ev)

    link = Link(policy)
    c = link.client
    link.write(group(c, envelope()))
    link.replies()
    link.write(c.send_message(b"x\r\n") + group(c, envelope()))
    got = link.replies()
    assert [(type(r.command).__name__, r.reply.code) for r in got] == [("EndOfData", 421)]
    assert c.state is smtp.State.CLOSED
    assert c.in_flight == ()
    c.receive_data(b"250 2.1.0 Ok\r\n")  # a server that went on anyway: nothing is matched
    assert isinstance(c.next_event(), smtp.ConnectionClosed)


def _at_dot(extensions: Sequence[str] = ALL_EXTENSIONS) -> smtp.ClientConnection:
    link = Link(extensions=extensions)
    c = link.client
    for e in envelope():  # one at a time: this server may not offer PIPELINING
        link.write(c.send(e))
        link.replies()
    c.send_message(b"x\r\n")
    return c


@pytest.mark.parametrize(
    "misuse",
    [
        "mail-without-pipelining",
        "content-before-354",
        "end-twice",
        "mail-after-data",
        "mail-while-content-open",
    ],
)
def test_misuse_around_the_dot_is_refused(misuse: str) -> None:
    c = _at_dot(NO_PIPELINING if misuse == "mail-without-pipelining" else ALL_EXTENSIONS)
    match misuse:
        case "mail-without-pipelining":
            with pytest.raises(smtp.LocalProtocolError, match="PIPELINING"):
                c.send(smtp.MailFrom(address="a@x.test"))
        case "content-before-354":
            for e in envelope():
                c.send(e)
            with pytest.raises(smtp.LocalProtocolError, match="354"):
                c.send(smtp.DataChunk(data=b"early\r\n"))
        case "end-twice":
            with pytest.raises(smtp.LocalProtocolError, match="EndOfData"):
                c.send(smtp.EndOfData())
        case "mail-after-data":
            for e in envelope():
                c.send(e)
            with pytest.raises(smtp.LocalProtocolError, match="DATA"):
                c.send(smtp.MailFrom(address="a@x.test"))
        case "mail-while-content-open":
            c.receive_data(b"250 2.0.0 Ok\r\n")
            c.next_event()
            for e in envelope():
                c.send(e)
            c.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n")
            c.read_replies([])
            assert c.can_send_content
            c.send(smtp.DataChunk(data=b"half"))
            with pytest.raises(smtp.LocalProtocolError, match="content"):
                c.send(smtp.MailFrom(address="a@x.test"))
    assert c.state is smtp.State.ERROR


@pytest.mark.parametrize("path", ["short", "general"])
def test_mail_after_the_dot_takes_either_path_alike(path: str) -> None:
    c = _at_dot()
    send = c.send if path == "short" else c._send_general
    assert send(smtp.MailFrom(address="a@x.test")) == b"MAIL FROM:<a@x.test>\r\n"
    assert send(smtp.RcptTo(address="b@y.test")) == b"RCPT TO:<b@y.test>\r\n"
    assert send(smtp.Data()) == b"DATA\r\n"
    assert c.in_flight[0] is smtp.Input.END_OF_DATA


def test_send_group_takes_back_a_group_it_cannot_write() -> None:
    c = _at_dot()
    before = (c.state, c.in_flight, c._send_state, c._send_utf8)
    out = [b"kept"]
    bad = [smtp.MailFrom(address="a@x.test"), smtp.RcptTo(address="a b@y.test"), smtp.Data()]
    with pytest.raises(smtp.LocalProtocolError, match="cannot send path"):
        c.send_group(bad, out)
    assert out == [b"kept"]
    assert (c.state, c.in_flight, c._send_state, c._send_utf8) == before
    assert group(c, envelope()) == b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
    # Anything else send refuses still spends the engine.
    with pytest.raises(smtp.LocalProtocolError, match="DATA"):
        c.send_group([smtp.Rset()], out)
    assert c.state is smtp.State.ERROR


def test_send_message_parts_hands_a_checked_body_back_as_it_is() -> None:
    c = _at_dot()
    c.receive_data(b"250 2.0.0 Ok\r\n")
    c.next_event()
    for e in envelope():
        c.send(e)
    c.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n")
    c.read_replies([])
    body = b"Subject: s\r\n\r\nplain\r\n"
    assert c.check_content(body) is None
    content, end = c.send_message_parts(body)
    assert content is body
    assert end == b".\r\n"


_BODY = st.lists(
    st.sampled_from([b"line", b".dot", b"..", b"", b"x" * 50, b"\xc3\xa9t\xc3\xa9"]), max_size=6
).map(lambda lines: b"\r\n".join(lines) + b"\r\n")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(_BODY, st.lists(st.booleans(), min_size=1, max_size=3), st.booleans()),
        min_size=1,
        max_size=5,
    )
)
def test_pipelined_behind_each_dot_equals_lock_step(
    messages: list[tuple[bytes, list[bool], bool]],
) -> None:
    """Messages (body, which recipients the server takes, whether it takes the dot): sent
    with each next group behind the previous dot, the server sees and answers exactly what
    it sees and answers when every group waits for the dot's reply, in fewer writes."""
    n = len(messages)
    dot_ok = [ok for _, takes, ok in messages if any(takes)]

    def envelope_of(i: int) -> list[smtp.Event]:
        rcpts = [f"{'ok' if ok else 'no'}{k}@y.test" for k, ok in enumerate(messages[i][1])]
        return envelope(f"m{i}@x.test", *rcpts)

    def run(ahead: bool) -> tuple[list[tuple[str, int]], list[bytes], int]:
        dots = 0

        def policy(ev: smtp.Event) -> smtp.Reply | None:
            nonlocal dots
            if isinstance(ev, smtp.RcptTo) and ev.address.startswith("no"):
                return smtp.Reply.of(550, "5.1.1", "no")
            if isinstance(ev, smtp.EndOfData):
                dots += 1
                if not dot_ok[dots - 1]:
                    return smtp.Reply.of(554, "5.7.1", "spam")
            return default_reply(ev)

        link = Link(policy)
        c = link.client
        seen: list[tuple[str, int]] = []
        writes = 0

        def write(data: bytes) -> None:
            nonlocal writes
            link.write(data)
            writes += 1
            seen.extend((type(r.command).__name__, r.reply.code) for r in link.replies())

        out = group(c, envelope_of(0))
        for i, (body, takes, _) in enumerate(messages):
            write(out)
            nxt = envelope_of(i + 1) if i + 1 < n else None
            if not any(takes):
                assert not c.can_send_content
                head: list[smtp.Event] = [] if c.state is smtp.State.READY else [smtp.Rset()]
                out = group(c, head + (nxt or []))
                continue
            assert c.can_send_content
            content, end = c.send_message_parts(body)
            out = content + end
            if ahead and nxt is not None:
                out += group(c, nxt)
                continue
            write(out)
            out = group(c, nxt) if nxt is not None else b""
        if out:
            write(out)
        return seen, link.t.messages, writes

    ahead, lock = run(True), run(False)
    assert ahead[:2] == lock[:2]
    assert ahead[2] == lock[2] - sum(
        1 for i, (_, takes, _) in enumerate(messages) if any(takes) and i + 1 < n
    )
