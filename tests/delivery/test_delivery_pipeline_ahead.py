"""The next transfer's group behind the final dot (RFC 2920 §3.1): one write per message.

Against Postfix's smtp-sink (a real receiver) and the scripted receiver for failures: N
transfers in one ``deliver`` take N + 1 writes; a 421, a 5xx or a hang-up at the first dot;
the second transfer's RCPT refused; a server without PIPELINING; each reply's own deadline;
a server answering out of order (smtp-sink ``-W``); and, by Hypothesis, one ``deliver`` of
many transfers ends exactly as one ``deliver`` per transfer does.
"""

from __future__ import annotations

import pytest
from dlv_helpers import (
    SmtpSink,
    kinds,
    literal_settings,
    outcome_of,
    run,
    session,
    transfer,
)
from dlv_receiver import DEFAULT_EXTENSIONS, AtDot, Receiver, Script
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.delivery import DeliveryOutcome, Phase, Session, TransferReport
from sluice.delivery.values import dot_voided, reply_outcome
from sluice.sched.outcome import OutcomeKind, Result, Scope
from sluice.smtp import Reply

D = OutcomeKind.DELIVERED
T = OutcomeKind.TRANSIENT
P = OutcomeKind.PERMANENT
DOT_THEN_MAIL = b"\r\n.\r\nMAIL FROM:<"


def rx_settings(rx: Receiver, **kw: object):  # type: ignore[no-untyped-def]
    return literal_settings([(rx.host, rx.port)], **kw)


def body(i: int) -> bytes:
    return f"Subject: {i}\r\n\r\nmessage {i}\r\n.leading dot\r\n".encode()


@pytest.mark.interop
def test_n_transfers_take_n_plus_one_writes_into_smtp_sink() -> None:
    with SmtpSink("127.0.0.41") as sink:

        async def go() -> None:
            s = await session(literal_settings([(sink.host, sink.port)]))
            assert s.pipelining
            reports = await s.deliver(
                [transfer(i, [f"r{i}@sink.test", "x@sink.test"], body=body(i)) for i in range(6)]
            )
            assert [kinds(r) for r in reports] == [{0: D, 1: D}] * 6
            assert all(r.data_sent and not r.possible_duplicate for r in reports)
            # One write for the first group, then one per message: content, dot, next group.
            assert s.writes == 7
            assert s.messages_sent == 6
            assert s.transactions == 6
            assert s.is_usable
            (r,) = await s.deliver([transfer(9)])  # a call of one: two writes, as before
            assert kinds(r) == {0: D}
            assert s.writes == 9
            await s.close()

        run(go())
        dumps = sink.dumps()
    assert len(dumps) == 7
    got = sorted(d.message.split(b"\n")[0] for d in dumps)
    assert got == sorted([f"Subject: {i}".encode() for i in range(6)] + [b"Subject: test"])
    assert all(d.rcpts[1:] == ["<x@sink.test>"] for d in dumps if b"message" in d.message)
    assert all(b"\n.leading dot\n" in d.message for d in dumps if b"message" in d.message)


@pytest.mark.interop
def test_smtp_sink_hanging_up_at_every_dot() -> None:
    # -q .: smtp-sink disconnects at the final dot (with our next group already written).
    with SmtpSink("127.0.0.42", "-q", ".") as sink:

        async def go() -> None:
            s = await session(literal_settings([(sink.host, sink.port)]))
            r1, r2, r3 = await s.deliver([transfer(1), transfer(2), transfer(3)])
            assert r1.possible_duplicate
            assert r1.data_sent
            assert outcome_of(r1, 0).scope is Scope.MESSAGE
            for r in (r2, r3):
                o = outcome_of(r, 0)
                assert (o.kind, o.scope, o.possible_duplicate, r.data_sent) == (
                    T,
                    Scope.SESSION,
                    False,
                    False,
                )
            assert s.possible_duplicates == 1
            await s.close()

        run(go())


@pytest.mark.interop
def test_replies_out_of_order_void_the_dot_verdict() -> None:
    # smtp-sink -W .:N holds the dot's reply back but answers the commands already read
    # behind it at once, out of order: the reply taken as the dot's was MAIL's. The
    # group's 354 then lands on a RCPT (a protocol error), which gives it away: the first
    # transfer is a possible duplicate, never "delivered", and the second is untried.
    with SmtpSink("127.0.0.55", "-W", ".:3") as sink:

        async def go() -> None:
            settings_ = literal_settings([(sink.host, sink.port)])
            s = await session(settings_)
            r1, r2, r3 = await s.deliver(
                [transfer(1, ["a@sink.test", "b@sink.test"]), transfer(2), transfer(3)]
            )
            assert r1.possible_duplicate
            assert r1.data_sent
            for i in (0, 1):
                o = outcome_of(r1, i)
                assert (o.kind, o.scope, o.phase, o.possible_duplicate) == (
                    T,
                    Scope.MESSAGE,
                    Phase.DOT,
                    True,
                )
                assert "out of order" in o.text
            for r in (r2, r3):
                o = outcome_of(r, 0)
                assert (o.kind, o.scope, r.data_sent) == (T, Scope.SESSION, False)
            assert s.possible_duplicates == 1
            assert not s.is_usable
            await s.close()

        run(go())


def test_dot_voided_keeps_what_was_decided_before_the_dot() -> None:
    refused = reply_outcome(Reply.of(550, "5.1.1", "no"), Scope.RECIPIENT, Phase.RCPT)
    taken = reply_outcome(Reply.of(250, "2.0.0", "ok"), Scope.RECIPIENT, Phase.DOT)
    report = TransferReport(
        msg_id=7,
        results=(
            Result(msg_id=7, rcpts=(1,), outcome=refused),
            Result(msg_id=7, rcpts=(0, 2), outcome=taken),
        ),
        data_sent=True,
    )
    voided = dot_voided(report, "why")
    assert voided.possible_duplicate
    assert voided.data_sent
    assert kinds(voided) == {0: T, 1: P, 2: T}
    o = outcome_of(voided, 2)
    assert isinstance(o, DeliveryOutcome)
    assert (o.scope, o.phase, o.possible_duplicate, o.text) == (
        Scope.MESSAGE,
        Phase.DOT,
        True,
        "4.4.2 why; possible duplicate",
    )


def test_group_rides_behind_the_dot_and_server_reads_match_writes() -> None:
    async def go() -> None:
        async with Receiver(Script(), "127.0.0.43") as rx:
            s = await session(rx_settings(rx))
            reads = rx.reads
            reports = await s.deliver([transfer(i, body=body(i)) for i in range(4)])
            assert [kinds(r) for r in reports] == [{0: D}] * 4
            assert rx.reads - reads == s.writes == 5
            raw = bytes(rx.raw[0])
            assert raw.count(DOT_THEN_MAIL) == 3
            assert [m.data for m in rx.messages] == [body(i) for i in range(4)]
            assert rx.errors == []
            await s.close()

    run(go())


def test_421_to_the_first_dot_ends_the_session_and_the_second_is_untried() -> None:
    gone = Reply.of(421, "4.3.2", "shutting down")

    async def go() -> None:
        async with (
            Receiver(Script(dot_replies=(gone,)), "127.0.0.44") as first,
            Receiver(Script(), "127.0.0.45") as second,
        ):
            hosts = [(first.host, first.port), (second.host, second.port)]
            s = await session(literal_settings(hosts))
            r1, r2, r3 = await s.deliver([transfer(1), transfer(2), transfer(3)])
            o1 = outcome_of(r1, 0)
            assert (o1.kind, o1.scope, o1.code, o1.phase) == (T, Scope.MESSAGE, 421, Phase.DOT)
            assert r1.data_sent
            assert not r1.possible_duplicate
            for r in (r2, r3):
                o = outcome_of(r, 0)
                assert (o.kind, o.scope, r.data_sent) == (T, Scope.SESSION, False)
            assert DOT_THEN_MAIL in bytes(first.raw[0])  # the second group was written
            assert first.messages == []
            assert second.messages == []
            assert not s.is_usable
            await s.close()
            # With smtp-421-means-mx-unavailable the rest go to the next host.
            first.dots = 0  # the next dot there is the first again: 421
            s = await session(literal_settings(hosts, smtp_421_means_mx_unavailable=True))
            r1, r2, r3 = await s.deliver([transfer(4), transfer(5), transfer(6)])
            assert outcome_of(r1, 0).code == 421  # tried: not sent again on this call
            assert kinds(r2) == {0: D}
            assert kinds(r3) == {0: D}
            assert r2.info is not None
            assert r2.info.remote_address == second.host
            assert [m.data for m in second.messages] == [transfer(5).body, transfer(6).body]
            assert s.is_usable
            await s.close()

    run(go())


def test_connection_lost_after_the_first_dot() -> None:
    async def go() -> None:
        script = Script(dot_actions=(AtDot.HANG_UP,))
        async with Receiver(script, "127.0.0.46") as rx:
            s = await session(rx_settings(rx))
            r1, r2 = await s.deliver([transfer(1, ["a@mx.test", "b@mx.test"]), transfer(2)])
            o1 = outcome_of(r1, 1)
            assert (o1.kind, o1.scope, o1.possible_duplicate) == (T, Scope.MESSAGE, True)
            assert r1.possible_duplicate
            assert r1.data_sent
            o2 = outcome_of(r2, 0)
            assert (o2.kind, o2.scope, o2.possible_duplicate) == (T, Scope.SESSION, False)
            assert not r2.data_sent
            assert not r2.possible_duplicate
            assert s.possible_duplicates == 1
            assert DOT_THEN_MAIL in bytes(rx.raw[0])
            assert len(rx.unacknowledged) == 1
            await s.close()

    run(go())


def test_second_rcpt_refused_while_the_first_dot_is_accepted_then_rset() -> None:
    script = Script(rcpt={"bad@mx.test": Reply.of(550, "5.1.1", "no such user")})

    async def go() -> None:
        async with Receiver(script, "127.0.0.47") as rx:
            s = await session(rx_settings(rx))
            r1, r2, r3, r4, r5 = await s.deliver(
                [
                    transfer(1),
                    transfer(2, ["bad@mx.test"]),
                    transfer(3),
                    transfer(4, ["bad@mx.test", "ok@mx.test"]),
                    transfer(5),
                ]
            )
            assert kinds(r1) == {0: D}
            assert kinds(r2) == {0: P}
            assert outcome_of(r2, 0).phase is Phase.RCPT
            assert kinds(r3) == {0: D}
            assert kinds(r4) == {0: P, 1: D}
            assert kinds(r5) == {0: D}
            raw = bytes(rx.raw[0])
            # 2 rode behind 1's dot; its transaction was abandoned, so the RSET leads 3's
            # group (no dot to ride on); 4 rode behind 3's dot, 5 behind 4's.
            assert b"\r\n.\r\nMAIL FROM:<sender@sluice.test>\r\nRCPT TO:<bad@mx.test>" in raw
            assert raw.count(b"RSET\r\n") == 1
            assert b"DATA\r\nRSET\r\nMAIL FROM:" in raw
            assert raw.count(DOT_THEN_MAIL) == 3
            # Writes: 1's group | 1's content + 2's group | RSET + 3's group |
            # 3's content + 4's group | 4's content + 5's group | 5's content.
            assert s.writes == 6
            assert len(rx.messages) == 4
            assert rx.errors == []
            assert s.is_usable
            await s.close()

    run(go())


def test_first_dot_refused_and_the_second_delivered() -> None:
    async def go() -> None:
        for reply, kind in (
            (Reply.of(552, "5.3.4", "message too big"), P),
            (Reply.of(451, "4.3.0", "try later"), T),
        ):
            async with Receiver(Script(dot_replies=(reply,)), "127.0.0.48") as rx:
                s = await session(rx_settings(rx))
                r1, r2 = await s.deliver([transfer(1), transfer(2)])
                o1 = outcome_of(r1, 0)
                assert (o1.kind, o1.scope, o1.code, o1.phase) == (
                    kind,
                    Scope.MESSAGE,
                    reply.code,
                    Phase.DOT,
                )
                assert kinds(r2) == {0: D}
                assert s.writes == 3
                assert s.is_usable
                await s.close()

    run(go())


def test_second_mail_refused_and_a_locally_refused_transfer_in_between() -> None:
    script = Script(senders={"blocked@sluice.test": Reply.of(550, "5.7.1", "blocked")})

    async def go() -> None:
        async with Receiver(script, "127.0.0.49") as rx:
            s = await session(rx_settings(rx))
            r1, r2, r3, r4 = await s.deliver(
                [
                    transfer(1),
                    transfer(2, sender="blocked@sluice.test"),
                    transfer(3, body=b"nul \x00 here\r\n"),  # refused before any command
                    transfer(4),
                ]
            )
            assert kinds(r1) == {0: D}
            o2 = outcome_of(r2, 0)
            assert (o2.kind, o2.scope, o2.phase) == (P, Scope.MESSAGE, Phase.MAIL)
            o3 = outcome_of(r3, 0)
            assert (o3.kind, o3.status, o3.phase) == (P, "5.6.0", Phase.LOCAL)
            assert kinds(r4) == {0: D}
            assert s.transactions == 3
            assert [m.sender for m in rx.messages] == ["sender@sluice.test"] * 2
            assert s.is_usable
            await s.close()

    run(go())


def test_engine_refused_path_behind_a_dot_is_taken_back_and_the_dot_still_goes() -> None:
    async def go() -> None:
        async with Receiver(Script(), "127.0.0.50") as rx:
            s = await session(rx_settings(rx))
            # "a b@mx.test" passes the event checks but not the path grammar: the group
            # behind 1's dot is taken back whole, 1's content and dot go out alone; then 2,
            # on its own turn, is refused by the engine as before (which spends it).
            r1, r2, r3 = await s.deliver([transfer(1), transfer(2, ["a b@mx.test"]), transfer(3)])
            assert kinds(r1) == {0: D}
            o2 = outcome_of(r2, 0)
            assert (o2.kind, o2.scope, o2.status) == (T, Scope.MESSAGE, "4.3.0")
            o3 = outcome_of(r3, 0)
            assert (o3.kind, o3.scope, r3.data_sent) == (T, Scope.SESSION, False)
            raw = bytes(rx.raw[0])
            assert b"a b@" not in raw
            assert raw.endswith(b"\r\n.\r\n")  # nothing rode behind 1's dot
            assert [m.data for m in rx.messages] == [transfer(1).body]
            await s.close()

    run(go())


@pytest.mark.parametrize("flags", ["no-pipelining", "ignore-pipelining"])
def test_without_pipelining_every_command_waits(flags: str) -> None:
    exts = tuple(e for e in DEFAULT_EXTENSIONS if e != "PIPELINING")

    async def go() -> None:
        script = Script(extensions=exts if flags == "no-pipelining" else DEFAULT_EXTENSIONS)
        async with Receiver(script, "127.0.0.51") as rx:
            s = await session(rx_settings(rx, ignore_pipelining=flags != "no-pipelining"))
            assert not s.pipelining
            reads = rx.reads
            reports = await s.deliver([transfer(i, ["a@mx.test", "b@mx.test"]) for i in range(3)])
            assert [kinds(r) for r in reports] == [{0: D, 1: D}] * 3
            # MAIL, RCPT, RCPT, DATA, content: five writes each, as before.
            assert rx.reads - reads == s.writes == 15
            await s.close()

    run(go())


def test_each_reply_keeps_its_own_deadline() -> None:
    # The dot's reply takes longer than command-timeout but less than the termination
    # timeout; the group behind the dot is timed from when the dot's reply came.
    async def go() -> None:
        async with Receiver(Script(dot_delay=0.4), "127.0.0.52") as rx:
            st_ = rx_settings(rx, command_timeout=0.25, smtp_data_termination_timeout=5.0)
            s = await session(st_)
            r1, r2 = await s.deliver([transfer(1), transfer(2)])
            assert kinds(r1) == {0: D}
            assert kinds(r2) == {0: D}
            assert s.writes == 3
            await s.close()
        async with Receiver(Script(dot_delay=0.6), "127.0.0.52") as rx:
            st_ = rx_settings(rx, smtp_data_termination_timeout=0.2)
            s = await session(st_)
            r1, r2 = await s.deliver([transfer(1), transfer(2)])
            o1 = outcome_of(r1, 0)
            assert (o1.kind, o1.possible_duplicate, o1.phase) == (T, True, Phase.DOT)
            o2 = outcome_of(r2, 0)
            assert (o2.kind, o2.scope, r2.data_sent) == (T, Scope.SESSION, False)
            await s.close()

    run(go())


def test_content_stalled_with_a_group_behind_it_is_not_sent_and_the_next_is_untried() -> None:
    big = (b"y" * 70 + b"\r\n") * (24_000_000 // 72)

    async def go() -> None:
        async with Receiver(Script(stall_content=True), "127.0.0.56") as rx:
            s = await session(rx_settings(rx, data_send_timeout=0.3))
            r1, r2 = await s.deliver([transfer(1, body=big), transfer(2)])
            o1 = outcome_of(r1, 0)
            assert (o1.kind, o1.scope, o1.phase, o1.possible_duplicate) == (
                T,
                Scope.SESSION,
                Phase.CONTENT,
                False,
            )
            assert not r1.data_sent
            o2 = outcome_of(r2, 0)
            assert (o2.kind, o2.scope, r2.data_sent) == (T, Scope.SESSION, False)
            assert s.possible_duplicates == 0
            await s.close()
            assert rx.dots == 0

    run(go())


# --- one deliver of many ≡ one deliver per transfer -------------------------------------------

_REPLIES = {
    "ok": None,
    "450": Reply.of(450, "4.2.1", "busy"),
    "550": Reply.of(550, "5.1.1", "no such user"),
    "421": Reply.of(421, "4.7.0", "closing"),
}
_DOTS = {
    "ok": Reply.of(250, "2.0.0", "Ok: queued"),
    "451": Reply.of(451, "4.3.0", "later"),
    "554": Reply.of(554, "5.7.1", "spam"),
    "421": Reply.of(421, "4.3.2", "bye"),
}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[tuple[str, list[str]]], Script]:
    """Transfers (sender, recipients) and a script answering each sender, recipient and dot."""
    n = draw(st.integers(2, 5))
    transfers: list[tuple[str, list[str]]] = []
    senders: dict[str, Reply] = {}
    rcpt: dict[str, Reply] = {}
    for i in range(n):
        sender = f"s{i}@sluice.test"
        mail = _REPLIES[draw(st.sampled_from(["ok", "ok", "ok", "550", "450", "421"]))]
        if mail is not None:
            senders[sender] = mail
        rcpts = [f"r{i}.{k}@mx.test" for k in range(draw(st.integers(1, 3)))]
        for a in rcpts:
            reply = _REPLIES[draw(st.sampled_from(["ok", "ok", "450", "550", "421"]))]
            if reply is not None:
                rcpt[a] = reply
        transfers.append((sender, rcpts))
    dots = draw(st.lists(st.sampled_from(list(_DOTS)), min_size=n, max_size=n))
    actions = draw(
        st.lists(
            st.sampled_from([AtDot.REPLY] * 4 + [AtDot.HANG_UP, AtDot.REPLY_THEN_HANG_UP]),
            min_size=n,
            max_size=n,
        )
    )
    script = Script(
        senders=senders,
        rcpt=rcpt,
        dot_replies=tuple(_DOTS[d] for d in dots),
        dot_actions=tuple(actions),
    )
    return transfers, script


def _summary(reports: list[TransferReport]) -> list[object]:
    out: list[object] = []
    for r in reports:
        per = {}
        for res in r.results:
            o = res.outcome
            for i in res.rcpts:
                if o.scope is Scope.SESSION and o.code == 0:
                    # Untried on a lost connection: the phase says whether the loss was
                    # seen before the transfer began or while waiting (timing, both ways).
                    per[i] = (o.kind, o.scope)
                else:
                    per[i] = (o.kind, o.scope, o.code, o.status, o.phase, o.possible_duplicate)
        out.append((r.data_sent, r.possible_duplicate, sorted(per.items())))
    return out


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(scenarios())
def test_one_call_of_many_ends_as_one_call_per_transfer(
    scenario: tuple[list[tuple[str, list[str]]], Script],
) -> None:
    specs, script = scenario
    ts = [
        transfer(i, rcpts, sender=sender, body=body(i)) for i, (sender, rcpts) in enumerate(specs)
    ]

    Got = tuple[list[TransferReport], list[bytes], Session, bytes]

    async def together() -> Got:
        async with Receiver(script, "127.0.0.53") as rx:
            s = await session(rx_settings(rx))
            reports = await s.deliver(ts)
            await s.close()
            assert rx.errors == []
            return reports, [m.data for m in rx.messages], s, bytes(rx.raw[0])

    async def one_by_one() -> Got:
        async with Receiver(script, "127.0.0.54") as rx:
            s = await session(rx_settings(rx))
            reports = [(await s.deliver([t]))[0] for t in ts]
            await s.close()
            assert rx.errors == []
            return reports, [m.data for m in rx.messages], s, bytes(rx.raw[0])

    got, got_msgs, a, a_raw = run(together())
    want, want_msgs, b, b_raw = run(one_by_one())
    assert _summary(got) == _summary(want)
    assert got_msgs == want_msgs
    assert (a.messages_sent, a.possible_duplicates) == (b.messages_sent, b.possible_duplicates)
    replies = [*script.senders.values(), *script.rcpt.values(), *script.dot_replies]
    if all(x is AtDot.REPLY for x in script.dot_actions) and all(r.code != 421 for r in replies):
        # Nothing cut the session short: the same bytes, only grouped differently.
        assert a_raw == b_raw
    assert a.writes <= b.writes
